"""The per-frame path, written once: the model's disparity -> scale -> depth -> point cloud (and colour picture).

Pure functions and small objects, no ROS: the depth node (:mod:`monodepth_ros.depth_node`), both replay modes,
the demo and the benchmarks call them, so what replay reports is what the robot publishes. The shape follows
depth_image_proc's ``point_cloud_xyz``: the node does the ROS plumbing (parameters, subscriptions, the worker
thread, publishing) and hands each frame to :func:`process_frame`.

    raw image + camera_info --(rectified when D != 0, :func:`prepare_camera`)--> rgb, K (pinhole)
    disp (h, w) at model size --(sky masked by valid, scale policy)--> scale
    disp --resize to the output size, bilinear--> 1 / disp * scale --[min_depth, max_depth] else NaN--> depth
    valid (h, w), when the model has it --resize, bilinear--> confidence --< validity_threshold: NaN--> depth
    depth + K_out --> organised cloud (:func:`frame_cloud`), colour picture (:func:`frame_colored`),
                      laser scan (:func:`frame_scan`), confidence image (:func:`frame_confidence`)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import cv2
import numpy as np

from monodepth_ros.geometry import scale_intrinsics, validate_intrinsics
from monodepth_ros.msgs.pointcloud import depth_to_cloud_buffer
from monodepth_ros.rectify import Calibration, RectifiedFrame, Rectifier
from monodepth_ros.scale_policy import GroundPlaneScale, make_scale_policy
from monodepth_ros.scan import Scan, depth_to_scan
from monodepth_ros.visualize import colorize_depth

__all__ = ["CameraFrame", "FrameParams", "FrameOutput", "FrameRejected", "resize_model_output", "depth_from_disp",
           "invalid_pixels", "mask_invalid", "prepare_camera", "process_frame", "frame_cloud", "frame_colored",
           "frame_confidence", "frame_invalid_share", "frame_scan", "configure_ground", "scale_policy_from_params"]


def resize_model_output(x: np.ndarray, out_hw: tuple[int, int] | None) -> np.ndarray:
    """A model output map (h, w) float32 -> (H, W) = ``out_hw``, bilinear: the one resize of the network's
    per-pixel outputs (disparity, validity) to the published size. Unchanged when ``out_hw`` is None or equal."""
    x = np.asarray(x, dtype=np.float32)
    if out_hw is None or tuple(out_hw) == x.shape:
        return x
    return cv2.resize(x, (int(out_hw[1]), int(out_hw[0])), interpolation=cv2.INTER_LINEAR)


def depth_from_disp(
    disp: np.ndarray,
    out_hw: tuple[int, int] | None = None,
    scale: float = 1.0,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> np.ndarray:
    """Scaled disparity (h, w) -> depth (H, W) float32 = ``scale / disp``: the one resize-then-invert.

    ``out_hw`` = (H, W) resizes the *disparity* bilinearly before inverting, as the KITTI protocol does (a
    depth resize would blur far and near into a wrong middle). NaN (REP 118: no measurement) where disp <= 0 or
    non-finite, and where the depth falls outside [min_depth, max_depth] (sky, and the far range the model
    cannot resolve).
    """
    disp = resize_model_output(disp, out_hw)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(scale) / disp
    # NaN disparity fails every comparison; disp <= 0 or inf gives a non-positive or non-finite depth.
    valid = (disp > 0) & (depth > 0) & np.isfinite(depth) & (depth >= min_depth) & (depth <= max_depth)
    depth[~valid] = np.nan
    return depth


def invalid_pixels(valid: np.ndarray, threshold: float) -> np.ndarray:
    """Validity (H, W) in [0, 1] (the model's probability of a surface, 0 = sky) -> (H, W) bool, True where it
    is below ``threshold`` or NaN: the pixels masked as no surface. All False when ``threshold`` is 0."""
    valid = np.asarray(valid, dtype=np.float32)
    if threshold <= 0:
        return np.zeros(valid.shape, dtype=bool)
    return ~(valid >= np.float32(threshold))


def mask_invalid(depth: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """Depth (H, W) float32 -> a new (H, W) float32 array, NaN where :func:`invalid_pixels` of the validity
    ``valid`` (H, W, same size) at ``threshold`` is True."""
    if depth.shape != np.shape(valid):
        raise ValueError(f"depth {depth.shape} and validity {np.shape(valid)} must have the same size")
    return np.where(invalid_pixels(valid, threshold), np.float32(np.nan), depth).astype(np.float32, copy=False)


@dataclass(frozen=True)
class CameraFrame:
    """One camera frame as the pipeline needs it: RGB (H, W, 3) uint8, K (3, 3) at that size, the size
    (width, height) its camera_info declares (None or zeros when the camera_info does not say), and ``valid``
    (H, W) bool, False where the image holds no scene (a rectified frame's border; None = all valid): the depth
    there is NaN."""

    rgb: np.ndarray
    K: np.ndarray
    info_size: tuple[int, int] | None = None
    valid: np.ndarray | None = None


@dataclass(frozen=True)
class FrameParams:
    """The per-frame settings (node parameters of the same names, :mod:`monodepth_ros.node_params`)."""

    output_resolution: str = "input"  # input (camera size) | model
    min_depth: float = 0.1
    max_depth: float = 80.0
    decimation: int = 1
    cloud_rgb: bool = True
    colored_min_m: float = 1.0
    colored_max_m: float = 80.0
    scan_height: int = 1
    scan_range_min: float = 0.1
    scan_range_max: float = 80.0
    validity_threshold: float = 0.5

    @classmethod
    def from_params(cls, p: Mapping) -> FrameParams:
        """The fields of a parameter mapping (e.g. the node's ``self.p`` snapshot); others are ignored."""
        return cls(**{f.name: p[f.name] for f in fields(cls) if f.name in p})


@dataclass(frozen=True)
class FrameOutput:
    """What one frame publishes: depth (H_out, W_out) float32 (metres; model units for relative) with NaN
    where invalid, its intrinsics K (3, 3), the image at its size (H_out, W_out, 3) for the cloud's colour,
    the scale used, ``(kind, message)`` problems worth reporting that did not stop the frame, and
    ``confidence`` (H_out, W_out) float32 in [0, 1], the model's validity at the output size (None when the
    model has no validity output)."""

    depth: np.ndarray
    K: np.ndarray
    rgb: np.ndarray
    scale: float
    problems: tuple[tuple[str, str], ...] = ()
    confidence: np.ndarray | None = None


class FrameRejected(ValueError):
    """This frame cannot be published; ``kind`` names the problem (camera_info, model_output)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def prepare_camera(rgb: np.ndarray, calib: Calibration, rectify: str, rectifier: Rectifier
                   ) -> tuple[CameraFrame, RectifiedFrame]:
    """The :class:`CameraFrame` the model sees for ``rgb`` (H, W, 3) of a camera with ``calib``: rectified
    when ``rectify`` is ``auto`` and D is non-zero (:mod:`monodepth_ros.rectify`, maps cached in
    ``rectifier``), else as it came. Also returns the :class:`~monodepth_ros.rectify.RectifiedFrame` (the
    calibration of what is published, and a note to log once). Raises :class:`FrameRejected` (kind
    ``camera_info``) for a distortion model or calibration that cannot be undone."""
    try:
        rf = rectifier.rectify(rgb, calib, rectify)
    except ValueError as e:
        raise FrameRejected("camera_info", str(e)) from None
    camera = CameraFrame(rf.rgb, rf.calib.K, (calib.width, calib.height), rf.valid)
    return camera, rf


def process_frame(camera: CameraFrame, disp: np.ndarray, params: FrameParams, policy,
                  valid: np.ndarray | None = None) -> FrameOutput:
    """One frame: the model's scaled disparity (h, w) for ``camera`` -> :class:`FrameOutput`.

    ``valid`` (h, w) in [0, 1]: the model's validity output (None when it has none). It is resized with the
    disparity, and the depth is NaN where it is below ``params.validity_threshold`` (0: nothing masked), in the
    published depth and in the relative depth the scale policy sees (a ground-plane fit never sees sky).
    ``policy`` is a scale-policy object (:mod:`monodepth_ros.scale_policy`); a ground-plane policy keeps its
    state between calls. Raises :class:`FrameRejected` when the camera_info does not fit the image, K is not a
    pinhole matrix, the model output holds no finite value, or the policy has no scale it can stand behind;
    ValueError when ``valid`` is not the size of ``disp``.
    """
    H, W = camera.rgb.shape[:2]
    if camera.info_size and all(camera.info_size) and tuple(camera.info_size) != (W, H):
        w_i, h_i = camera.info_size
        raise FrameRejected("camera_info", f"camera_info is {w_i}x{h_i} but the image is {W}x{H}")
    try:
        K = validate_intrinsics(np.asarray(camera.K, dtype=np.float64))
    except ValueError as e:
        raise FrameRejected("camera_info", str(e)) from None
    disp = np.asarray(disp, dtype=np.float32)
    problems: list[tuple[str, str]] = []
    bad = ~np.isfinite(disp)
    if bad.all():
        raise FrameRejected("model_output", "model output is all NaN/inf; frame skipped")
    if bad.any():
        problems.append(("model_output", f"model output has {int(bad.sum())} NaN/inf pixels (set to NaN)"))

    h, w = disp.shape
    if valid is not None:
        valid = np.asarray(valid, dtype=np.float32)
        if valid.shape != disp.shape:
            raise ValueError(f"validity {valid.shape} and disparity {disp.shape} must have the same size")
    K_model = scale_intrinsics(K, w / W, h / H)
    valid_model = None
    if camera.valid is not None:  # a model pixel is valid when all the camera pixels it averages are
        valid_model = cv2.resize(camera.valid.astype(np.uint8) * np.uint8(255), (w, h),
                                 interpolation=cv2.INTER_AREA) == 255
    rel_depth = None
    if policy.needs_relative_depth:
        rel_depth = depth_from_disp(disp)
        if valid_model is not None:
            rel_depth[~valid_model] = np.nan
        if valid is not None:
            rel_depth = mask_invalid(rel_depth, valid, params.validity_threshold)
    est = policy.estimate(rel_depth, K_model)
    if est.scale is None:
        raise FrameRejected(policy.name, est.note or "no scale for this frame")
    if est.note:
        problems.append((policy.name, est.note))
    if params.output_resolution == "input":
        out_hw, K_out, rgb_out, valid_out = (H, W), K, camera.rgb, camera.valid
    else:
        from monodepth_ros.backends.base import resize_rgb

        out_hw, K_out, rgb_out, valid_out = (h, w), K_model, resize_rgb(camera.rgb, h, w), valid_model
    depth = depth_from_disp(disp, out_hw, est.scale, params.min_depth, params.max_depth)
    if valid_out is not None:
        depth[~valid_out] = np.nan
    confidence = None
    if valid is not None:
        confidence = np.clip(resize_model_output(valid, out_hw), 0.0, 1.0)
        depth = mask_invalid(depth, confidence, params.validity_threshold)
    return FrameOutput(depth=depth, K=K_out, rgb=rgb_out, scale=float(est.scale), problems=tuple(problems),
                       confidence=confidence)


def frame_cloud(out: FrameOutput, params: FrameParams) -> tuple[np.ndarray, list]:
    """The organised cloud of a frame: (points structured array, PointCloud2 fields), see
    :func:`monodepth_ros.msgs.pointcloud.depth_to_cloud_buffer`."""
    return depth_to_cloud_buffer(out.depth, out.K, rgb=out.rgb if params.cloud_rgb else None,
                                 decimation=params.decimation)


def frame_scan(out: FrameOutput, params: FrameParams) -> Scan:
    """The laser scan of a frame (depthimage_to_laserscan's semantics, :mod:`monodepth_ros.scan`): the nearest
    range in [scan_range_min, scan_range_max] per direction over ``scan_height`` rows around the published
    depth's optical centre row. Raises ValueError when the band does not fit in the depth image."""
    return depth_to_scan(out.depth, out.K, params.scan_height, params.scan_range_min, params.scan_range_max)


def frame_colored(out: FrameOutput, params: FrameParams) -> np.ndarray:
    """The depth as an RGB picture (H_out, W_out, 3) uint8 over [colored_min_m, colored_max_m]."""
    return colorize_depth(out.depth, params.colored_min_m, params.colored_max_m)


def frame_confidence(out: FrameOutput) -> np.ndarray:
    """The ``depth/confidence`` image (H_out, W_out) uint8: 0 where the depth is NaN (masked as sky by the
    validity output, outside [min_depth, max_depth], a non-finite model output); where a depth is published,
    the model's validity ``round(255 * valid)`` clipped to [1, 255] when it has a validity output, else 255.

    So 0 always means "no measurement", and a published pixel says how sure the network is that it shows a
    surface (not sky). It is not a calibrated depth uncertainty: a monocular network has none to give."""
    published = np.isfinite(out.depth)
    if out.confidence is None:
        return np.where(published, np.uint8(255), np.uint8(0))
    level = np.clip(np.rint(np.nan_to_num(out.confidence, nan=0.0) * 255.0), 1, 255).astype(np.uint8)
    return np.where(published, level, np.uint8(0))


def frame_invalid_share(out: FrameOutput, params: FrameParams) -> float | None:
    """The share in [0, 1] of the frame's output pixels that the validity output masks at
    ``params.validity_threshold`` (:func:`invalid_pixels`), or None without a validity output."""
    if out.confidence is None:
        return None
    return float(np.mean(invalid_pixels(out.confidence, params.validity_threshold)))


def configure_ground(ground: GroundPlaneScale, p: Mapping) -> GroundPlaneScale:
    """Set a ground-plane estimator's settings from node parameters ``p``; its state (EMA scale) is kept."""
    ground.camera_height_m = float(p["camera_height_m"])
    ground.region_top = float(p["ground_region_top"])
    ground.alpha = float(p["ground_smoothing"])
    ground.max_tilt_deg = float(p["ground_max_tilt_deg"])
    ground.method = p["ground_method"]
    ground.pitch_deg = float(p["camera_pitch_deg"])
    ground.roll_deg = float(p["camera_roll_deg"])
    return ground


def scale_policy_from_params(p: Mapping, model_scale: float, model_policy: str,
                             ground: GroundPlaneScale | None = None):
    """The scale-policy object that node parameters ``p`` ask for, for a model whose metadata says
    ``model_scale`` / ``model_policy``. ``ground`` (configured here) carries ground-plane state across frames.
    Raises ValueError (saying what to set) for a request that would publish an unknown scale as metres."""
    ground = configure_ground(GroundPlaneScale() if ground is None else ground, p)
    return make_scale_policy(p["scale_policy"], p["fixed_scale"], model_scale, model_policy, ground)
