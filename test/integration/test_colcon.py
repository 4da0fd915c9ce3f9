"""The package builds and tests in a ROS 2 colcon workspace, as on a robot (`colcon build` + `colcon test`).

The inner `colcon test` runs a fast subset of this suite (the geometry and bundle tests) so the check stays
quick; the whole suite under colcon is the same pytest run that `make test` does.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INNER_TESTS = ["test/runtime/test_geometry.py"]


@pytest.mark.skipif(os.environ.get("MONODEPTH_COLCON_INNER") == "1", reason="already running inside colcon test")
def test_colcon_build_and_test_run_and_pass(tmp_path, ros_subprocess_env):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        colcon = shutil.which("colcon")
    assert colcon, "colcon is not installed; it is part of requirements/dev.txt"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "monodepth_ros").symlink_to(REPO)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = dict(ros_subprocess_env, MONODEPTH_COLCON_INNER="1", PATH=path)
    paths = ["--base-paths", "src", "--build-base", "build", "--install-base", "install"]

    def run(*args):
        return subprocess.run([str(colcon), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    build = run("--log-base", "log", "build", *paths)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert_installed_where_ros_looks(tmp_path / "install" / "monodepth_ros")

    test = run("--log-base", "log", "test", *paths, "--return-code-on-test-failure", "--pytest-args", *INNER_TESTS)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]

    result = run("test-result", "--test-result-base", "build", "--all")
    m = re.search(r"Summary: (\d+) tests, (\d+) errors, (\d+) failures", result.stdout)
    assert m, result.stdout
    n_tests, n_err, n_fail = map(int, m.groups())
    assert n_tests > 0 and n_err == 0 and n_fail == 0, result.stdout


def assert_installed_where_ros_looks(prefix: Path) -> None:
    """The install tree has what ROS tools look up: the ament index marker and package.xml (``ros2 pkg``), the
    launch file and its RViz config under share/ (``FindPackageShare``, ``ros2 launch``), every config file, the
    console scripts under lib/<package>/ (``ros2 run``), and the embedded models inside the Python package."""
    share = prefix / "share" / "monodepth_ros"
    assert (prefix / "share/ament_index/resource_index/packages/monodepth_ros").is_file()
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "depth.launch.py").is_file()
    for rviz in (REPO / "launch" / "rviz").glob("*.rviz"):
        assert (share / "launch" / "rviz" / rviz.name).is_file(), rviz.name
    configs = [p.relative_to(REPO) for p in [*REPO.glob("config/*.yaml"), *REPO.glob("config/*.xml"),
                                             *REPO.glob("config/train/*.yaml")]]
    assert configs
    for rel in configs:
        assert (share / rel).is_file(), rel
    for script in ("depth_node", "depth_node_managed"):  # where `ros2 run monodepth_ros <script>` looks
        exe = prefix / "lib" / "monodepth_ros" / script
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    (pkg,) = prefix.glob("lib/python3*/site-packages/monodepth_ros")
    for model in (REPO / "monodepth_ros" / "models").iterdir():
        if model.suffix in (".onnx", ".json"):
            assert (pkg / "models" / model.name).is_file(), model.name
