"""How the depth node turns the network's scaled disparity into depth: the scale policies, in one vocabulary.

The model's metadata says what its output is (``scale_policy`` of :class:`~monodepth_ros.bundle.BundleMeta`):
``metric`` (trained with metric supervision: velocity, depth GT), ``fixed`` (a known constant factor, e.g. a
stereo baseline in metres) or ``relative`` (up to an unknown factor: plain self-supervised video). The node's
``scale_policy`` parameter says what to publish, with the same words:

- ``auto`` (default): the model's own scale for a ``metric`` or ``fixed`` model (metres); a ``relative`` model
  is refused, because its scale is unknown and the ``depth`` topic is metres (REP 118).
- ``metric``: ``scale / disp`` with the scale stored in the model; refused for a ``relative`` model.
- ``fixed``: ``fixed_scale / disp``, a factor the user calibrated (``fixed_scale`` > 0 required).
- ``ground_plane``: ``s_t / disp`` with ``s_t`` estimated every frame from the road, see
  :class:`GroundPlaneScale`. Until the road is first found it uses ``fixed_scale`` (if > 0) or the model's own
  scale (if the model is not ``relative``); with neither, frames are not published until the road is found.
- ``relative``: ``1 / disp`` in *model units*: explicitly not metres (the node warns at start and says so in
  ``/diagnostics``). A self-supervised monocular model only knows depth up to an unknown factor; the KITTI
  protocol recovers it per image with the GT median, which a robot does not have.

Assumptions of ``ground_plane`` (it is wrong when they are):
  1. the ground in the lower image region is locally flat (a road, not a kerb, a ramp or a crest);
  2. the camera's height above that ground (``camera_height_m``) is known and fixed;
  3. ``method="mount"`` (the default): the road's normal in the camera frame is known from the mount (pitch and
     roll, as in the robot's URDF/TF; level by default), and only the road's distance along it is estimated.
     ``method="fit"``: the normal is estimated too (within ``max_tilt_deg`` of the camera's up axis), which
     suits exact depth but not a network's: a monocular model's road is seldom the right *shape* - on real
     KITTI frames the fitted plane was tilted ~6 deg by the far road's error, and extrapolated back under the
     camera it put the road 2.2-2.7 m below a 1.65 m camera (benchmarks/real_data.py; docs/real_cameras.md);
  4. the road is visible in the lower region in most frames. When no road is found (a car right ahead,
     a wall), the previous scale is kept and the estimate is reported as stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monodepth_ros.geometry import axis_angle_to_matrix, backproject, crop_intrinsics

__all__ = ["POLICIES", "MODEL_POLICIES", "GROUND_METHODS", "PlaneFit", "fit_ground_plane", "mount_normal",
           "road_height_along", "GroundPlaneScale", "ScaleEstimate", "RelativeScale", "FixedScale",
           "GroundPlanePolicy", "choose_scale_policy", "make_scale_policy", "publishes_metres"]

POLICIES = ("auto", "metric", "fixed", "ground_plane", "relative")  # the node parameter
MODEL_POLICIES = ("metric", "fixed", "relative")  # what a model's metadata can say
GROUND_METHODS = ("mount", "fit")


@dataclass(frozen=True)
class PlaneFit:
    """A road plane ``n . p = height`` in the camera optical frame (n unit, pointing down, towards the road)."""

    normal: np.ndarray  # (3,)
    height: float  # distance camera -> plane, same units as the input depth
    inlier_fraction: float
    n_points: int


def fit_ground_plane(
    points: np.ndarray,
    *,
    max_tilt_deg: float = 15.0,
    inlier_rel: float = 0.03,
    iterations: int = 64,
    min_inlier_fraction: float = 0.3,
    rng: np.random.Generator | None = None,
) -> PlaneFit | None:
    """Robust plane fit to candidate road points (N, 3): RANSAC, then least squares on the inliers.

    Vectorised RANSAC: all ``iterations`` 3-point hypotheses are scored at once ((iterations, N) residuals).
    Hypotheses whose normal is more than ``max_tilt_deg`` from the camera's down axis (+y) are discarded, so
    walls and car backs cannot win. The inlier band is relative (``inlier_rel * height``) because relative
    depth has no unit. Returns None if fewer than ``min_inlier_fraction`` of the points support the best plane.
    """
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    n = len(pts)
    if n < 10:
        return None
    rng = np.random.default_rng(0) if rng is None else rng
    idx = rng.integers(0, n, size=(iterations, 3))
    p0, p1, p2 = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normals = np.cross(p1 - p0, p2 - p0)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals = normals[ok] / norms[ok, None]
    p0 = p0[ok]
    normals *= np.where(normals[:, 1] < 0, -1.0, 1.0)[:, None]  # orient towards +y (down, to the road)
    level = normals[:, 1] >= np.cos(np.deg2rad(max_tilt_deg))
    heights = np.einsum("ij,ij->i", normals, p0)
    keep = level & (heights > 0)
    if not np.any(keep):
        return None
    normals, heights = normals[keep], heights[keep]
    resid = np.abs(pts @ normals.T - heights[None, :])  # (N, hypotheses)
    inliers = resid < inlier_rel * heights[None, :]
    best = int(np.argmax(inliers.sum(axis=0)))
    mask = inliers[:, best]
    if mask.mean() < min_inlier_fraction:
        return None
    # Least-squares refinement: the plane through the inlier centroid along the smallest singular direction.
    sel = pts[mask]
    centroid = sel.mean(axis=0)
    _, _, vt = np.linalg.svd(sel - centroid, full_matrices=False)
    normal = vt[2] * (1.0 if vt[2, 1] >= 0 else -1.0)
    height = float(normal @ centroid)
    if height <= 0 or normal[1] < np.cos(np.deg2rad(max_tilt_deg)):
        return None
    resid = np.abs(pts @ normal - height)
    frac = float(np.mean(resid < inlier_rel * height))
    if frac < min_inlier_fraction:
        return None
    return PlaneFit(normal=normal, height=height, inlier_fraction=frac, n_points=n)


def mount_normal(pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Unit road normal (3,) in the camera optical frame (x right, y down, z forward), pointing to the road, for a
    camera pitched by ``pitch_deg`` (positive = looking down at the road) and rolled by ``roll_deg`` about its
    optical axis: the down axis rotated by the axis-angle ``(pitch, 0, roll)`` (radians).
    """
    R = axis_angle_to_matrix(np.array([np.deg2rad(pitch_deg), 0.0, np.deg2rad(roll_deg)]))
    return R @ np.array([0.0, 1.0, 0.0])


def road_height_along(
    points: np.ndarray,
    normal: np.ndarray,
    inlier_rel: float = 0.05,
    bin_rel: float = 0.02,
    min_inlier_fraction: float = 0.15,
) -> PlaneFit | None:
    """The road's distance below the camera along a known normal, from candidate road points (N, 3).

    Each point's height along the normal is ``h_i = n . p_i``; the road is the one height that most points share.
    It is found as the fullest bin of a histogram of ``log h_i`` (bins of ``bin_rel``: relative, because relative
    depth has no unit), refined as the median of the points within ``inlier_rel`` of it. Cars, kerbs and walls
    spread their heights over a range and do not form the mode. Returns None when fewer than
    ``min_inlier_fraction`` of the points agree (no road in view). Vectorised: one histogram per frame.

    The defaults (+-5 %, 15 %) are looser than the plane fit's: a network's road heights scatter by several per
    cent. On the real KITTI drive a trained model's road had 16-23 % of the region within +-3 % and ~28 % within
    +-5 %, and the estimate was within 10 % of the LiDAR's road scale in 38 of 39 frames; a fronto-parallel wall
    puts ~6 % of the region in any +-5 % band, far below 15 %.
    """
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    n_unit = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    if len(pts) < 10:
        return None
    h = pts @ n_unit
    h = h[h > 0]
    if len(h) < 10:
        return None
    log_h = np.log(h)
    lo, hi = float(log_h.min()), float(log_h.max())
    n_bins = max(1, int(np.ceil((hi - lo) / bin_rel)))
    counts, edges = np.histogram(log_h, bins=n_bins, range=(lo, hi + 1e-12))
    k = int(np.argmax(counts))
    mode = 0.5 * (edges[k] + edges[k + 1])
    log_height = float(np.median(log_h[np.abs(log_h - mode) < inlier_rel]))
    # Support over all candidate points (those above the camera, h <= 0, are never road).
    frac = float(np.count_nonzero(np.abs(log_h - log_height) < inlier_rel)) / len(pts)
    height = float(np.exp(log_height))
    if frac < min_inlier_fraction:
        return None
    return PlaneFit(normal=n_unit, height=height, inlier_fraction=frac, n_points=len(pts))


class GroundPlaneScale:
    """Per-frame metric scale from a known camera height above a flat road, smoothed with an EMA.

    ``update(depth_rel, K)`` finds the road in the back-projected lower part of the relative depth (rows from
    ``region_top * H`` down): along the mount's normal (``method="mount"``, :func:`road_height_along`, the
    default) or as a fitted plane (``method="fit"``, :func:`fit_ground_plane`). It takes
    ``scale_raw = camera_height_m / road_height`` and smooths it: ``scale = alpha * scale_raw + (1 - alpha) *
    scale``. See the module docstring for the assumptions and why ``mount`` is the default.
    """

    def __init__(
        self,
        *,
        camera_height_m: float = 1.65,
        region_top: float = 0.6,
        alpha: float = 0.2,
        max_tilt_deg: float = 15.0,
        inlier_rel: float = 0.03,  # fit method only; mount uses road_height_along's defaults
        max_points: int = 3000,
        seed: int = 0,
        method: str = "mount",
        pitch_deg: float = 0.0,
        roll_deg: float = 0.0,
    ):
        if method not in GROUND_METHODS:
            raise ValueError(f"method must be one of {GROUND_METHODS}, got {method!r}")
        self.method = method
        self.pitch_deg = float(pitch_deg)
        self.roll_deg = float(roll_deg)
        self.camera_height_m = float(camera_height_m)
        self.region_top = float(region_top)
        self.alpha = float(alpha)
        self.max_tilt_deg = float(max_tilt_deg)
        self.inlier_rel = float(inlier_rel)
        self.max_points = int(max_points)
        self.scale: float | None = None  # None until the first good fit
        self.last_fit: PlaneFit | None = None
        self.fresh = False  # did the last update produce a fit?
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self.scale, self.last_fit, self.fresh = None, None, False

    def region_points(self, depth_rel: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Lower-region points (N, 3) of a relative depth (H, W) with intrinsics K (3, 3), subsampled."""
        H, W = depth_rel.shape
        top = int(np.clip(round(self.region_top * H), 0, H - 1))
        region = np.asarray(depth_rel[top:], dtype=np.float64)
        # Stride so that at most ~max_points survive: the fit is statistical, full resolution buys nothing.
        stride = max(1, int(np.sqrt(region.size / max(self.max_points, 1))))
        sub = region[::stride, ::stride]
        K_sub = crop_intrinsics(K, 0, top)
        K_sub[:2] /= stride  # sampling every stride-th pixel (see pointcloud.decimate_intrinsics)
        pts = backproject(sub, K_sub).reshape(-1, 3)
        return pts[np.all(np.isfinite(pts), axis=1) & (pts[:, 2] > 0)]

    def update(self, depth_rel: np.ndarray, K: np.ndarray) -> float | None:
        """Fold in one frame (depth (H, W) in model units, K (3, 3) at that size). Returns the smoothed scale."""
        pts = self.region_points(depth_rel, K)
        if self.method == "mount":
            fit = road_height_along(pts, mount_normal(self.pitch_deg, self.roll_deg))
        else:
            fit = fit_ground_plane(pts, max_tilt_deg=self.max_tilt_deg, inlier_rel=self.inlier_rel, rng=self._rng)
        self.fresh = fit is not None
        if fit is None:
            return self.scale
        self.last_fit = fit
        raw = self.camera_height_m / fit.height
        self.scale = raw if self.scale is None else self.alpha * raw + (1.0 - self.alpha) * self.scale
        return self.scale


# ---- the policies as small objects the per-frame pipeline calls (monodepth_ros.pipeline.process_frame) --------
@dataclass(frozen=True)
class ScaleEstimate:
    """One frame's scale (depth = scale / disp), or None when there is none to stand behind (the frame is not
    published), and, when it is a fallback or missing, why (reported as a problem)."""

    scale: float | None
    note: str | None = None


class RelativeScale:
    """``relative``: depth in model units, scale 1. Not metres."""

    name = "relative"
    needs_relative_depth = False

    def estimate(self, depth_rel: np.ndarray | None, K: np.ndarray) -> ScaleEstimate:
        return ScaleEstimate(1.0)


@dataclass(frozen=True)
class FixedScale:
    """``metric`` (the model's stored scale) or ``fixed`` (the user's factor): one constant for every frame."""

    value: float
    name: str = "fixed"
    needs_relative_depth = False

    def estimate(self, depth_rel: np.ndarray | None, K: np.ndarray) -> ScaleEstimate:
        return ScaleEstimate(self.value)


@dataclass
class GroundPlanePolicy:
    """``ground_plane``: the road's scale this frame (:class:`GroundPlaneScale`, which keeps the EMA state);
    ``fallback`` until the road was found once (None: no frame is published before that)."""

    ground: GroundPlaneScale
    fallback: float | None
    fallback_source: str = "the fixed scale"
    name = "ground_plane"
    needs_relative_depth = True

    def estimate(self, depth_rel: np.ndarray | None, K: np.ndarray) -> ScaleEstimate:
        """``depth_rel`` (h, w): depth at scale 1 (model units), K (3, 3) at that size."""
        s = self.ground.update(depth_rel, K)
        if self.ground.fresh:
            return ScaleEstimate(s)
        where = f"no road found in the lower image region ({self.ground.method} method)"
        if s is not None:
            return ScaleEstimate(s, f"{where}; keeping the previous scale {s:.3f}")
        if self.fallback is None:
            return ScaleEstimate(None, f"{where}; the model is relative and no fixed_scale is set, so nothing is "
                                       "published until the road is found")
        return ScaleEstimate(self.fallback, f"{where}; no road found yet, using {self.fallback_source} "
                                            f"{self.fallback:g}")


def choose_scale_policy(requested: str, fixed_scale: float, model_policy: str) -> str:
    """The policy the node runs for parameter ``requested`` with a model whose metadata says ``model_policy``.

    ``auto`` becomes ``metric`` for a metric or fixed model. Raises ValueError, saying what to set instead, when
    the request would publish a scale nobody can stand behind: ``auto``/``metric`` with a relative model, or
    ``fixed`` without ``fixed_scale``.
    """
    if requested not in POLICIES:
        raise ValueError(f"scale_policy must be one of {list(POLICIES)}, got {requested!r}")
    if model_policy not in MODEL_POLICIES:
        raise ValueError(f"the model's scale_policy must be one of {list(MODEL_POLICIES)}, got {model_policy!r}")
    if requested in ("auto", "metric") and model_policy == "relative":
        raise ValueError(
            f"scale_policy '{requested}' needs a model with a known scale, but this model is relative (trained "
            "without velocity, stereo or depth supervision: its depth is up to an unknown factor). Set "
            "scale_policy:=ground_plane with camera_height_m of your mount, scale_policy:=fixed with a calibrated "
            "fixed_scale, or scale_policy:=relative to publish model units (not metres)")
    if requested == "fixed" and not fixed_scale > 0:
        raise ValueError("scale_policy 'fixed' needs fixed_scale > 0 (a factor you calibrated); for the model's "
                         "own scale use scale_policy:=metric")
    return "metric" if requested == "auto" else requested


def publishes_metres(policy: str) -> bool:
    """Whether the chosen policy (after :func:`choose_scale_policy`) publishes metres."""
    return policy != "relative"


def make_scale_policy(name: str, fixed_scale: float, model_scale: float, model_policy: str,
                      ground: GroundPlaneScale | None = None):
    """The policy object for the node parameter ``scale_policy`` = ``name`` (validated by
    :func:`choose_scale_policy`, which raises ValueError). ``model_scale``/``model_policy``: the model's metadata.
    ``ground`` carries the ground-plane state across frames (a fresh one if None)."""
    name = choose_scale_policy(name, fixed_scale, model_policy)
    if name == "relative":
        return RelativeScale()
    if name == "metric":
        return FixedScale(float(model_scale), name="metric")
    if name == "fixed":
        return FixedScale(float(fixed_scale), name="fixed")
    if fixed_scale > 0:
        fallback, source = float(fixed_scale), "the fixed_scale parameter"
    elif model_policy != "relative":
        fallback, source = float(model_scale), f"the model's scale ({model_policy})"
    else:
        fallback, source = None, ""
    return GroundPlanePolicy(GroundPlaneScale() if ground is None else ground, fallback, source)
