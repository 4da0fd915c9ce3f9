"""A tiny, real exported depth model (ONNX, built with onnx.helper) for node tests and the node benchmark.

Its disparity is what a camera ``camera_height_m`` above a flat road sees (``disp = (v - cy) / (fy * h) / k``
below the horizon, ``1 / (10 * max_depth)`` above it), in relative units (``k`` = ``rel_factor``) so that
``fixed`` with the stored scale ``1 / k`` and ``ground_plane`` both give metric depth. One deliberate trap:
a pure-white image gives NaN disparity (``0 * sqrt(negative)``), to test the node's NaN handling with a real
ONNX Runtime session. Optionally ``extra_convs`` 3x3 convolutions make it cost something (benchmarks), and
``validity`` adds the second output ``valid`` (1 on the road below the horizon, 0 on the "sky" rows above it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from monodepth_ros.geometry import denormalize_intrinsics

KITTI_K_NORM = [[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]]


def road_rows(height: int, K: np.ndarray) -> np.ndarray:
    """(height,) bool: the rows of the road, at least one row below the horizon ``cy``; the others are "sky"."""
    return np.arange(height, dtype=np.float64) - K[1, 2] >= 1.0


def road_disparity(height: int, width: int, K: np.ndarray, camera_height_m: float, rel_factor: float,
                   max_depth: float) -> np.ndarray:
    """Relative disparity (height, width) float32 of a flat road seen by a level camera with intrinsics K."""
    v = np.arange(height, dtype=np.float64)
    fy, cy = K[1, 1], K[1, 2]
    ground = (v - cy) / (fy * camera_height_m) / rel_factor
    sky = 1.0 / (10.0 * max_depth) / rel_factor
    col = np.where(road_rows(height, K), ground, sky)
    return np.repeat(col[:, None], width, axis=1).astype(np.float32)


def road_validity(height: int, width: int, K: np.ndarray) -> np.ndarray:
    """Validity (height, width) float32 of the same scene: 1.0 on the road rows, 0.0 on the sky rows above."""
    return np.repeat(road_rows(height, K)[:, None], width, axis=1).astype(np.float32)


def save_disparity_graph(path: str | Path, nodes: list, inits: list, height: int, width: int, meta: dict,
                         name: str = "tiny_depth", extra_outputs: tuple[str, ...] = ()) -> Path:
    """Write ONNX nodes (input ``rgb`` (1, 3, H, W) -> output ``disp`` (1, 1, H, W), then ``extra_outputs``
    of the same shape, e.g. ``("valid",)``) with the ``monodepth_ros`` metadata ``meta`` to ``path``, checked;
    the one way the tests' hand-made models are saved."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, height, width])
         for n in ("disp", *extra_outputs)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=name)
    model.ir_version = 9
    helper.set_model_props(model, {"monodepth_ros": json.dumps(meta)})
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def make_tiny_depth_model(
    path: str | Path,
    height: int = 32,
    width: int = 96,
    K_norm=KITTI_K_NORM,
    K_model: np.ndarray | None = None,
    camera_height_m: float = 1.65,
    rel_factor: float = 0.2,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
    extra_convs: int = 0,
    scale_policy: str = "fixed",
    validity: bool = False,
) -> Path:
    """Write the model to ``path`` (.onnx) with the ``monodepth_ros`` metadata; returns the path.

    ``K_model``: pixel intrinsics (3, 3) at the model size used for the road; default ``K_norm`` denormalised.
    Pass the ones the node will derive (``scale_intrinsics`` of the camera's K) to get an exactly planar road.
    ``validity``: add the output ``valid`` (:func:`road_validity`) and ``validity_output: "valid"`` to the metadata.
    """
    from onnx import helper, numpy_helper

    K = denormalize_intrinsics(np.asarray(K_norm, dtype=np.float64), width, height) if K_model is None else K_model
    ramp = road_disparity(height, width, K, camera_height_m, rel_factor, max_depth)[None, None]
    inits = [
        numpy_helper.from_array(np.full((1, 3, 1, 1), 1.0 / 3.0, np.float32), "w_gray"),
        numpy_helper.from_array(ramp, "ramp"),
        numpy_helper.from_array(np.array(2.99, np.float32), "white_level"),
        numpy_helper.from_array(np.array(3.0, np.float32), "three"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [helper.make_node("Conv", ["rgb", "w_gray"], ["gray"])]
    feat = "gray"
    for i in range(extra_convs):  # compute load only: the result is multiplied by zero below
        w = np.random.default_rng(i).normal(0, 0.1, (8, 8 if i else 1, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [feat, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        feat = f"r{i}"
    nodes += [
        helper.make_node("Mul", ["gray", "three"], ["sum3"]),
        helper.make_node("Sub", ["white_level", "sum3"], ["margin"]),
        helper.make_node("Sqrt", ["margin"], ["gate"]),  # NaN where the pixel is (almost) pure white
        helper.make_node("Mul", ["gate", "zero"], ["nan_or_zero"]),
        helper.make_node("Add", ["ramp", "nan_or_zero"], ["disp0"]),
    ]
    if extra_convs:
        inits.append(numpy_helper.from_array(np.zeros((1, 8, 1, 1), np.float32), "w_out"))
        nodes += [helper.make_node("Conv", [feat, "w_out"], ["load0"]),
                  helper.make_node("Add", ["disp0", "load0"], ["disp"])]
    else:
        nodes[-1].output[0] = "disp"
    meta = {
        "height": height, "width": width, "min_depth": min_depth, "max_depth": max_depth,
        "scale_policy": scale_policy, "scale": 1.0 / rel_factor, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
        "intrinsics_norm": [list(map(float, r)) for r in K_norm], "source_sha256": "0" * 64,
        "depth_net": "tiny_road",
    }
    if not validity:
        return save_disparity_graph(path, nodes, inits, height, width, meta)
    # A constant of the scene, computed from the input (times zero) so that it is a real graph output.
    inits.append(numpy_helper.from_array(road_validity(height, width, K)[None, None], "road_valid"))
    nodes += [helper.make_node("Mul", ["gray", "zero"], ["no_gain"]),
              helper.make_node("Add", ["road_valid", "no_gain"], ["valid"])]
    meta["validity_output"] = "valid"
    return save_disparity_graph(path, nodes, inits, height, width, meta, extra_outputs=("valid",))


def make_content_depth_model(path: str | Path, height: int, width: int, K_model: np.ndarray,
                             camera_height_m: float = 1.65, rel_factor: float = 0.2) -> Path:
    """Like the tiny road model, but its disparity depends on every pixel and weighs the channels differently:
    ``disp = road * (0.5 + 0.7 r + 0.2 g + 0.1 b)`` (r, g, b in [0, 1]). A grey frame replicated to 3 channels
    gives ``road * (0.5 + grey)``; grey in one channel only, a lost row stride or a constant frame would not.
    Its road's scale changes with the picture, so a ground-plane estimate moves from frame to frame."""
    from onnx import helper, numpy_helper

    ramp = road_disparity(height, width, K_model, camera_height_m, rel_factor, 100.0)[None, None]
    inits = [numpy_helper.from_array(np.array([0.7, 0.2, 0.1], np.float32).reshape(1, 3, 1, 1), "w_rgb"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"), numpy_helper.from_array(ramp, "ramp")]
    nodes = [helper.make_node("Conv", ["rgb", "w_rgb"], ["mix"]), helper.make_node("Add", ["mix", "half"], ["gain"]),
             helper.make_node("Mul", ["ramp", "gain"], ["disp"])]
    meta = {"height": height, "width": width, "min_depth": 0.1, "max_depth": 100.0, "scale_policy": "fixed",
            "scale": 1.0 / rel_factor, "mean": [0.0] * 3, "std": [1.0] * 3,
            "intrinsics_norm": [list(map(float, r)) for r in KITTI_K_NORM], "source_sha256": "0" * 64,
            "depth_net": "tiny_content"}
    return save_disparity_graph(path, nodes, inits, height, width, meta, name="content_depth")
