"""The node-throughput benchmark's eager PyTorch row computes what the runtime computes: same weights, same
resize, the depth at the frame size, so the comparison of the two is a comparison of the same work."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from monodepth_training.bundle_io import save_bundle
from monodepth_training.inference import TorchBackend
from monodepth_training.networks import build_depth_net

from monodepth_ros.bundle import BundleMeta

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import node_throughput  # noqa: E402


def test_eager_monodepth2_gives_the_runtimes_depth_at_the_frame_size(tmp_path):
    torch.manual_seed(0)
    net = build_depth_net("monodepth2", width=0.25).eval()
    bundle = tmp_path / "m.safetensors"
    save_bundle(bundle, net, BundleMeta(depth_net="monodepth2", depth_kwargs={"width": 0.25}, height=64,
                                        width=192, min_depth=0.1, max_depth=100.0))
    rgb = np.random.default_rng(0).integers(0, 255, (150, 400, 3), dtype=np.uint8)
    eager = node_throughput.eager_monodepth2(str(bundle), 150, 400, threads=1)(rgb)
    runtime = TorchBackend(bundle).infer(rgb, out_size=(150, 400))
    assert eager.shape == (150, 400)
    np.testing.assert_allclose(eager, runtime, rtol=1e-4)
    timing = node_throughput.eager_pytorch(str(bundle), [rgb] * 6, threads=1, n=3)
    assert timing["eager_ms_p50"] > 0


def test_backend_ratios_time_every_model_on_every_cpu_backend(tmp_path):
    from tiny_depth_model import make_tiny_depth_model

    from monodepth_ros.backends import openvino_unavailable_reason

    model = str(make_tiny_depth_model(tmp_path / "tiny.onnx", 64, 160))
    frames = [np.random.default_rng(i).integers(0, 255, (64, 160, 3), dtype=np.uint8) for i in range(3)]
    rows, lines = node_throughput.backend_ratios([("fp32", model)], frames, threads=1)
    kinds = ["onnxruntime"] + (["openvino"] if openvino_unavailable_reason() is None else [])
    assert [r["backend"] for r in rows] == kinds and all(r["median_ms"] > 0 for r in rows)
    assert {r["precision"] for r in rows} == {"fp32"} and rows[0]["resolution"] == "160x64"
    assert len(lines) == len(kinds) - 1  # OpenVINO vs ONNX Runtime when both exist; no INT8 model given
