"""Rectification of distorted camera frames before inference, as image_proc's rectify does, with cached maps.

A camera_info whose D has a non-zero coefficient describes a raw (distorted) image. The network was trained on
pinhole images, and the depth, the cloud and the scan all back-project with a pinhole K, so such a frame is
remapped first into the geometry of the camera_info's projection P, as image_geometry's
``PinholeCameraModel::rectifyImage`` does: ``cv2.initUndistortRectifyMap(K, D, R, P[:3, :3])`` for
``plumb_bob`` and ``rational_polynomial``, ``cv2.fisheye.initUndistortRectifyMap`` for ``equidistant``. The
rectified image's intrinsics are P's left 3x3 (K when P is all zero), with no distortion and R = identity.

The maps depend only on the calibration (size, K, D, model, R, P), so :class:`Rectifier` builds them once per
calibration and each frame costs one ``cv2.remap`` (fixed-point CV_16SC2 maps, bilinear). Pixels of the
rectified image whose source lies (partly) outside the raw image are black; :class:`RectifiedFrame` carries a
mask of them so that no depth is published there (the network would see a black border, not the scene).

``rectify`` modes: ``auto`` remaps when D has any non-zero coefficient (as image_geometry: D all zero means
already rectified, whatever R and P say); ``off`` trusts the input as rectified, e.g. image_proc's
``image_rect`` published beside the raw camera's camera_info: no remap, and a frame whose camera_info has a
non-zero D is taken in P's geometry (as image_geometry projects a rectified image), saying so once. Either way a
camera_info with non-zero D is published as the rectified one (D = 0, K = P's 3x3, R = identity).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np

from monodepth_ros.geometry import validate_intrinsics

__all__ = ["DISTORTION_MODELS", "RECTIFY_MODES", "UnknownDistortionModel", "Calibration", "RectifiedFrame",
           "rectify_maps", "Rectifier", "published_camera_info"]

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")  # sensor_msgs/distortion_models.hpp
RECTIFY_MODES = ("auto", "off")
_OPENCV_D_LENGTHS = (4, 5, 8, 12, 14)  # the lengths cv2.initUndistortRectifyMap accepts


class UnknownDistortionModel(ValueError):
    """A camera_info with non-zero D and a distortion model this node cannot undo."""


@dataclass(frozen=True, eq=False)
class Calibration:
    """A camera's calibration as sensor_msgs/CameraInfo holds it: image ``width`` x ``height``, K (3, 3),
    D (n,), the distortion ``model`` name, the rectification rotation R (3, 3) and the projection P (3, 4)."""

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray
    model: str
    R: np.ndarray
    P: np.ndarray

    @classmethod
    def from_camera_info(cls, info, image_size: tuple[int, int] | None = None) -> Calibration:
        """The calibration of a (duck-typed) CameraInfo. ``image_size`` (width, height) stands in for a zero
        width/height (unknown calibration size); an all-zero R (not filled in) counts as identity."""
        width, height = int(info.width), int(info.height)
        if (not width or not height) and image_size is not None:
            width, height = int(image_size[0]), int(image_size[1])
        R = np.asarray(info.r, dtype=np.float64).reshape(3, 3)
        if not np.any(R):
            R = np.eye(3)
        return cls(width=width, height=height, K=np.asarray(info.k, dtype=np.float64).reshape(3, 3),
                   D=np.asarray(info.d, dtype=np.float64).ravel(), model=str(info.distortion_model), R=R,
                   P=np.asarray(info.p, dtype=np.float64).reshape(3, 4))

    @property
    def distorted(self) -> bool:
        """Whether D has a non-zero coefficient (image_geometry's test for a raw image)."""
        return bool(np.any(self.D != 0))

    @property
    def K_rect(self) -> np.ndarray:
        """Intrinsics (3, 3) of the rectified image: P's left 3x3, or K when P is not filled in."""
        return self.P[:, :3].copy() if np.any(self.P[:, :3]) else self.K.copy()

    def key(self) -> tuple:
        """What the rectification maps depend on (the cache key)."""
        return (self.width, self.height, self.model, self.K.tobytes(), self.D.tobytes(), self.R.tobytes(),
                self.P.tobytes())

    def rectified(self) -> Calibration:
        """The calibration of the rectified image: K = :attr:`K_rect`, D = 0 (plumb_bob), R = identity, P kept
        (``[K_rect | 0]`` when it was not filled in)."""
        K = self.K_rect
        P = self.P.copy() if np.any(self.P[:, :3]) else np.hstack([K, np.zeros((3, 1))])
        return Calibration(width=self.width, height=self.height, K=K, D=np.zeros(5), model="plumb_bob",
                           R=np.eye(3), P=P)


def _opencv_D(calib: Calibration) -> np.ndarray:
    n = calib.D.size
    if calib.model == "equidistant":  # k1..k4
        if n > 4 and np.any(calib.D[4:]):
            raise ValueError(f"equidistant distortion has 4 coefficients, got {n}: {calib.D.tolist()}")
        return np.pad(calib.D[:4], (0, max(0, 4 - n)))
    size = next((m for m in _OPENCV_D_LENGTHS if m >= n), None)
    if size is None:
        raise ValueError(f"{calib.model} distortion with {n} coefficients: OpenCV takes at most 14")
    return np.pad(calib.D, (0, size - n))


def rectify_maps(calib: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """The ``cv2.remap`` maps (CV_16SC2 map (H, W, 2) int16, interpolation table (H, W) uint16) that take the raw
    image of ``calib`` into its rectified geometry (:meth:`Calibration.rectified`). Raises
    :class:`UnknownDistortionModel` for a model other than :data:`DISTORTION_MODELS`, ValueError for unusable
    coefficients."""
    if calib.model not in DISTORTION_MODELS:
        raise UnknownDistortionModel(
            f"camera_info distortion_model {calib.model!r} with non-zero D {calib.D.tolist()} cannot be rectified "
            f"(known: {', '.join(DISTORTION_MODELS)}); rectify the image upstream (image_proc) and set rectify:=off")
    if not (np.all(np.isfinite(calib.D)) and np.all(np.isfinite(calib.R)) and np.all(np.isfinite(calib.P))):
        raise ValueError("camera_info D, R or P contains NaN or inf")
    if calib.width <= 0 or calib.height <= 0:
        raise ValueError(f"camera_info size {calib.width}x{calib.height} cannot be rectified")
    try:
        validate_intrinsics(calib.K)
        validate_intrinsics(calib.K_rect)
    except ValueError as e:
        raise ValueError(f"camera_info K or P cannot be rectified with: {e}") from None
    D = _opencv_D(calib)
    size = (calib.width, calib.height)
    if calib.model == "equidistant":
        return cv2.fisheye.initUndistortRectifyMap(calib.K, D, calib.R, calib.K_rect, size, cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(calib.K, D, calib.R, calib.K_rect, size, cv2.CV_16SC2)


@dataclass(frozen=True)
class RectifiedFrame:
    """A frame ready for the model: ``rgb`` (H, W, 3) uint8, the ``calib`` describing it (the rectified one
    whenever the input's D is non-zero), whether it was ``rectified`` (remapped here), ``valid`` (H, W) bool
    (False where the rectified pixel has no full source in the raw image; None = all valid), and a ``note`` to
    log once (a non-zero D taken as already rectified under ``rectify: off``)."""

    rgb: np.ndarray
    calib: Calibration
    rectified: bool
    valid: np.ndarray | None = None
    note: str | None = None


class Rectifier:
    """Rectifies frames with maps built once per calibration (the last ``max_entries`` calibrations are kept).
    ``builds`` and ``hits`` count map builds and cache hits. Not thread-safe: one per worker."""

    def __init__(self, max_entries: int = 4):
        self.max_entries = int(max_entries)
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = OrderedDict()
        self.builds = 0
        self.hits = 0
        self._warned_off = False

    def maps(self, calib: Calibration) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(map1, map2, valid)`` for ``calib`` (see :func:`rectify_maps`), from the cache when it has them."""
        key = calib.key()
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return entry
        map1, map2 = rectify_maps(calib)
        # A pixel is valid when its whole bilinear footprint lies inside the raw image (fixed-point weights sum
        # to exactly 1, so a full footprint gives exactly 255).
        ones = np.full((calib.height, calib.width), 255, np.uint8)
        valid = cv2.remap(ones, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) == 255
        entry = (map1, map2, None if valid.all() else valid)
        self._cache[key] = entry
        self.builds += 1
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return entry

    def rectify(self, rgb: np.ndarray, calib: Calibration, mode: str = "auto") -> RectifiedFrame:
        """``rgb`` (H, W, 3) of a camera with ``calib`` -> :class:`RectifiedFrame`. ``mode`` is ``auto`` or
        ``off`` (module docstring). Raises :class:`UnknownDistortionModel` / ValueError when ``auto`` meets a
        calibration it cannot undo, or an image whose size is not the calibration's."""
        if mode not in RECTIFY_MODES:
            raise ValueError(f"rectify must be one of {list(RECTIFY_MODES)}, got {mode!r}")
        if not calib.distorted:
            return RectifiedFrame(rgb=rgb, calib=calib, rectified=False)
        if mode == "off":  # already rectified (image_rect): its geometry is P's, as image_geometry reads it
            note = None
            if not self._warned_off:
                self._warned_off = True
                note = (f"rectify:=off and camera_info has {calib.model} distortion D={calib.D.tolist()}: the image "
                        "is taken as already rectified (image_proc's image_rect) with K = P's 3x3. If it is the "
                        "raw image, depth, cloud and scan are wrong away from the image centre: set rectify:=auto")
            return RectifiedFrame(rgb=rgb, calib=calib.rectified(), rectified=False, note=note)
        H, W = rgb.shape[:2]
        if (W, H) != (calib.width, calib.height):
            raise ValueError(f"camera_info is {calib.width}x{calib.height} but the image is {W}x{H}")
        map1, map2, valid = self.maps(calib)
        rect = cv2.remap(rgb, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return RectifiedFrame(rgb=rect, calib=calib.rectified(), rectified=True, valid=valid)


def published_camera_info(info, calib: Calibration):
    """The camera_info describing what is published for a frame of ``info``, whose calibration is ``calib``
    (:meth:`Calibration.from_camera_info`), for :func:`monodepth_ros.msgs.camera_info.rescaled_camera_info` to
    resize: ``info`` itself when D is zero; for a distorted camera (rectified, or taken as rectified under
    ``rectify: off``) a CameraInfo-like object (header, size, distortion_model, d, r, k, p) of the rectified
    image (:meth:`Calibration.rectified`: D = 0, K = P's 3x3, R = identity)."""
    if not calib.distorted:
        return info
    rect = calib.rectified()
    return SimpleNamespace(header=info.header, width=rect.width, height=rect.height,
                           distortion_model=rect.model, d=[float(v) for v in rect.D],
                           r=[float(v) for v in rect.R.ravel()], k=[float(v) for v in rect.K.ravel()],
                           p=[float(v) for v in rect.P.ravel()])
