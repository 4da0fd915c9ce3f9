# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use only.
# `make test-jazzy` runs the ROS-facing tests again on ROS 2 Jazzy, in a second venv (.venv-jazzy).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every process that may start a ROS node stays on loopback (see config/fastdds.xml and README).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
PYTEST_ARGS ?=
# One BLAS/OpenMP thread per process in tests: the suite runs node and training processes side by side on
# 2 cores, and spinning OpenMP threads made contended training steps 5-10x slower (measured).
TEST_ENV := OMP_NUM_THREADS=1

.PHONY: setup setup-jazzy test test-jazzy test-all lint demo colcon-test train-default train-default-gpu-prepare train-default-gpu bench clean

setup: $(STAMP)

# Re-installs only when a dependency list or the package metadata changes.
$(STAMP): requirements/runtime-base.txt requirements/runtime.txt requirements/train.txt requirements/openvino.txt \
		requirements/test-ros.txt requirements/dev.txt setup.py package.xml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24" "setuptools>=70,<80" wheel
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(TEST_ENV) $(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS)

# ROS 2 Jazzy (LTS): the same package in .venv-jazzy, with the Jazzy ROS wheels (requirements/jazzy.txt) instead of
# Kilted's, and no torch. It runs the tests marked `rosdistro` (node, replay, bag I/O, messages; see pyproject.toml),
# found by their `pytestmark` line so that modules needing torch are not even collected. Same stamp rule as .venv.
JAZZY_VENV := .venv-jazzy
JAZZY_BIN := $(JAZZY_VENV)/bin
JAZZY_STAMP := $(JAZZY_VENV)/.installed
ROSDISTRO_TESTS = $(shell grep -rlE --include='test_*.py' '^pytestmark = .*pytest\.mark\.rosdistro' test | sort)

setup-jazzy: $(JAZZY_STAMP)

$(JAZZY_STAMP): requirements/runtime-base.txt requirements/jazzy.txt requirements/test-ros.txt setup.py package.xml
	@test -x $(JAZZY_BIN)/python || $(PY) -m venv $(JAZZY_VENV)
	$(JAZZY_BIN)/python -m pip install -q --upgrade "pip>=24" "setuptools>=70,<80" wheel
	$(JAZZY_BIN)/python -m pip install -q -r requirements/jazzy.txt -r requirements/test-ros.txt
	$(JAZZY_BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	@touch $(JAZZY_STAMP)

test-jazzy: $(JAZZY_STAMP)
	@test -n "$(ROSDISTRO_TESTS)" || { echo "no test module has a 'pytestmark = ... rosdistro' line" >&2; exit 1; }
	$(TEST_ENV) $(JAZZY_BIN)/python -m pytest -m "rosdistro and not slow" --durations=10 $(PYTEST_ARGS) $(ROSDISTRO_TESTS)

test-all: $(STAMP) lint
	$(TEST_ENV) $(BIN)/python -m pytest -m "" --durations=15 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m monodepth_ros.demo

colcon-test: $(STAMP)
	$(BIN)/python -m pytest -m "" test/integration/test_colcon.py

train-default: $(STAMP)
	$(BIN)/python -m monodepth_training.train_default

# The same model on one GPU at 640x192 with AMP (training/train_default_gpu.py). The prepare step runs here, needs
# no GPU, and stages into .gpu_stage/ (git-ignored: KITTI frames, never commit) the frames and the wheels a bare
# GPU machine lacks, then prints the one command to run there (also in .gpu_stage/device_call.json).
# `make train-default-gpu` is that GPU half on a CUDA machine that has this venv (wheels unneeded there).
GPU_STAGE ?= .gpu_stage
train-default-gpu-prepare: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m monodepth_training.train_default_gpu prepare --stage $(GPU_STAGE)

train-default-gpu: $(STAMP)
	@test -f $(GPU_STAGE)/manifest.json || $(TEST_ENV) $(BIN)/python -m monodepth_training.train_default_gpu \
		prepare --stage $(GPU_STAGE) --no-wheels
	$(BIN)/python -m monodepth_training.train_default_gpu device --stage $(GPU_STAGE) \
		--out runs/default_model_gpu.out

# The shipped default model's speed on this machine (CPU backends, then through the node over DDS), and its accuracy
# on the real KITTI drives when ../shared/data/real is there. Each prints a table and writes benchmarks/results/.
DEFAULT_MODELS := --fp32 monodepth_ros/models/default.onnx --int8 monodepth_ros/models/default.int8.onnx
bench: $(STAMP)
	$(BIN)/python benchmarks/inference.py --onnx monodepth_ros/models/default.onnx \
		monodepth_ros/models/default.int8.onnx --threads 2
	$(BIN)/python benchmarks/node_throughput.py $(DEFAULT_MODELS) --threads 2
	@if [ -d ../shared/data/real ]; then $(BIN)/python benchmarks/real_data.py --real ../shared/data/real; \
	else echo "bench: ../shared/data/real not found: real-data benchmark skipped"; fi

clean:
	rm -rf build install log .pytest_cache .ruff_cache
