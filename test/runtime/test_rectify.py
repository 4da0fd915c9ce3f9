"""Rectification of distorted frames (monodepth_ros.rectify, pipeline.prepare_camera): for each distortion model a
raw frame rendered through OpenCV's forward projection comes out in the geometry of P (blob centres within
0.5 px); the maps are cached per calibration; ``off`` and undistorted frames pass through; what cannot be undone
is refused; the rectified border gets no depth; the published camera_info is the rectified one."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from monodepth_ros.node_params import defaults, validate_parameter
from monodepth_ros.pipeline import FrameParams, FrameRejected, prepare_camera, process_frame
from monodepth_ros.rectify import (
    Calibration,
    Rectifier,
    UnknownDistortionModel,
    published_camera_info,
    rectify_maps,
)
from monodepth_ros.scale_policy import FixedScale

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too

W, H = 320, 240
BACKGROUND, PEAK, SIGMA = 20.0, 200.0, 1.3
P_RECT = np.array([[190.0, 0.0, 158.0, 0.0], [0.0, 191.0, 121.5, 0.0], [0.0, 0.0, 1.0, 0.0]])
CASES = {
    # model: (K, D, rvec of R)
    "plumb_bob": (np.array([[200.0, 0, 161.3], [0, 201.0, 118.7], [0, 0, 1]]),
                  [-0.28, 0.09, 0.0012, -0.0008, -0.01], (0.01, -0.02, 0.005)),
    "rational_polynomial": (np.array([[205.0, 0, 158.2], [0, 204.0, 121.1], [0, 0, 1]]),
                            [-0.1, 0.02, 0.001, -0.0005, 0.0, 0.2, 0.01, 0.0], (0.0, 0.0, 0.0)),
    "equidistant": (np.array([[170.0, 0, 160.4], [0, 170.5, 119.6], [0, 0, 1]]),
                    [-0.02, 0.01, -0.005, 0.001], (0.0, 0.01, 0.0)),
}


def camera_info(K, D, model, R=None, P=P_RECT, size=(W, H)):
    """A duck-typed sensor_msgs/CameraInfo (R None = identity)."""
    R = np.eye(3) if R is None else R
    return SimpleNamespace(header=SimpleNamespace(frame_id="cam", stamp=None), width=size[0], height=size[1],
                           distortion_model=model, d=list(D), k=list(np.ravel(K)), r=list(np.ravel(R)),
                           p=list(np.ravel(P)))


def scene_points() -> np.ndarray:
    """A 7 x 5 grid of 3D points (N, 3) 4 m ahead, in the rectified frame, spread over most of the view."""
    xs, ys = np.meshgrid(np.linspace(-0.6, 0.6, 7), np.linspace(-0.45, 0.45, 5))
    z = 4.0
    return np.stack([xs.ravel() * z, ys.ravel() * z, np.full(xs.size, z)], axis=1)


def render_blobs(uv: np.ndarray) -> np.ndarray:
    """A grey RGB image (H, W, 3) uint8 with a Gaussian blob centred at each pixel position uv (N, 2)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.full((H, W), BACKGROUND)
    for cu, cv in uv:
        img += PEAK * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * SIGMA**2))
    return np.repeat(np.clip(np.rint(img), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def blob_centroid(img: np.ndarray, uv: np.ndarray, half: int = 5) -> np.ndarray:
    """Intensity-weighted centre (N, 2) of the blob around each approximate position uv (N, 2)."""
    grey = img[..., 0].astype(np.float64) - BACKGROUND
    out = []
    for cu, cv in uv:
        u0, v0 = int(round(cu)), int(round(cv))
        win = np.clip(grey[v0 - half:v0 + half + 1, u0 - half:u0 + half + 1], 0, None)
        vv, uu = np.mgrid[v0 - half:v0 + half + 1, u0 - half:u0 + half + 1]
        out.append([(win * uu).sum() / win.sum(), (win * vv).sum() / win.sum()])
    return np.array(out)


def raw_frame(model: str):
    """(raw image, calibration, expected blob positions in the rectified image): points X in the raw camera
    frame are drawn where OpenCV's forward model (projectPoints with D) puts them, and belong at P R X."""
    K, D, rvec = CASES[model]
    R = cv2.Rodrigues(np.array(rvec, np.float64))[0]
    X_rect = scene_points()
    X_raw = X_rect @ R  # R takes raw rays to rectified ones: X_rect = R X_raw
    if model == "equidistant":
        uv_raw = cv2.fisheye.projectPoints(X_raw.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K,
                                           np.array(D))[0].reshape(-1, 2)
    else:
        uv_raw = cv2.projectPoints(X_raw, np.zeros(3), np.zeros(3), K, np.array(D))[0].reshape(-1, 2)
    uvw = X_rect @ P_RECT[:, :3].T
    expected = uvw[:, :2] / uvw[:, 2:]
    assert (uv_raw.min(0) > 8).all() and (uv_raw.max(0) < [W - 8, H - 8]).all()
    calib = Calibration.from_camera_info(camera_info(K, D, model, R=R))
    return render_blobs(uv_raw), calib, expected, uv_raw


@pytest.mark.parametrize("model", list(CASES))
def test_each_distortion_model_is_rectified_into_the_geometry_of_P(model):
    raw, calib, expected, uv_raw = raw_frame(model)
    assert np.abs(uv_raw - expected).max() > 3.0  # the distortion matters: the raw frame is off by pixels
    rf = Rectifier().rectify(raw, calib, "auto")
    assert rf.rectified and rf.rgb.shape == raw.shape and rf.rgb.dtype == np.uint8
    found = blob_centroid(rf.rgb, expected)
    err = np.linalg.norm(found - expected, axis=1)
    assert err.max() < 0.5, f"{model}: blob centres off by up to {err.max():.2f} px"
    np.testing.assert_allclose(rf.calib.K, P_RECT[:, :3])
    np.testing.assert_array_equal(rf.calib.D, np.zeros(5))
    np.testing.assert_array_equal(rf.calib.R, np.eye(3))
    np.testing.assert_array_equal(rf.calib.P, P_RECT)


def test_rectified_calibration_takes_K_from_P_or_keeps_K_when_P_is_empty():
    K, D, _ = CASES["plumb_bob"]
    calib = Calibration.from_camera_info(camera_info(K, D, "plumb_bob", R=np.zeros((3, 3)), P=np.zeros((3, 4))))
    np.testing.assert_array_equal(calib.R, np.eye(3))  # an unfilled R is identity
    rect = calib.rectified()
    np.testing.assert_array_equal(rect.K, K)
    np.testing.assert_array_equal(rect.P, np.hstack([K, np.zeros((3, 1))]))
    rectify_maps(calib)  # P empty: undistort into K
    info = camera_info(K, D, "plumb_bob", size=(0, 0))
    assert (Calibration.from_camera_info(info, image_size=(W, H)).width,
            Calibration.from_camera_info(info, image_size=(W, H)).height) == (W, H)


def test_maps_are_built_once_per_calibration_and_rebuilt_for_a_new_one():
    K, D, _ = CASES["plumb_bob"]
    raw = np.zeros((H, W, 3), np.uint8)
    r = Rectifier(max_entries=2)
    for _ in range(3):  # equal calibrations from different message objects share the maps
        r.rectify(raw, Calibration.from_camera_info(camera_info(K, D, "plumb_bob")))
    assert (r.builds, r.hits) == (1, 2)
    D2 = list(D)
    D2[0] = -0.2
    r.rectify(raw, Calibration.from_camera_info(camera_info(K, D2, "plumb_bob")))
    assert r.builds == 2
    P2 = P_RECT.copy()
    P2[0, 0] = 180.0
    r.rectify(raw, Calibration.from_camera_info(camera_info(K, D, "plumb_bob", P=P2)))  # evicts the oldest
    assert r.builds == 3
    r.rectify(raw, Calibration.from_camera_info(camera_info(K, D, "plumb_bob")))
    assert r.builds == 4


def test_undistorted_and_off_frames_pass_through_and_off_says_so_once():
    K, D, _ = CASES["plumb_bob"]
    raw = render_blobs(np.array([[100.0, 100.0]]))
    r = Rectifier()
    for model in ("plumb_bob", "", "some_model"):  # D all zero: already rectified, whatever the model says
        rf = r.rectify(raw, Calibration.from_camera_info(camera_info(K, [0.0] * 5, model)))
        assert rf.rgb is raw and not rf.rectified and rf.note is None
    calib = Calibration.from_camera_info(camera_info(K, D, "plumb_bob"))
    first = r.rectify(raw, calib, "off")  # image_rect beside the raw camera's camera_info: P's geometry, no remap
    assert first.rgb is raw and not first.rectified
    np.testing.assert_array_equal(first.calib.K, P_RECT[:, :3])
    np.testing.assert_array_equal(first.calib.D, np.zeros(5))
    assert "rectify:=off" in first.note and "plumb_bob" in first.note and "image_rect" in first.note
    assert r.rectify(raw, calib, "off").note is None  # once
    assert r.builds == 0
    camera, rf = prepare_camera(raw, calib, "off", r)
    assert camera.rgb is raw and camera.valid is None
    np.testing.assert_array_equal(camera.K, P_RECT[:, :3])


def test_an_unknown_distortion_model_is_refused_naming_it():
    K, D, _ = CASES["plumb_bob"]
    calib = Calibration.from_camera_info(camera_info(K, D, "kannala_brandt_custom"))
    with pytest.raises(UnknownDistortionModel, match="kannala_brandt_custom"):
        Rectifier().rectify(np.zeros((H, W, 3), np.uint8), calib)
    with pytest.raises(FrameRejected, match="'kannala_brandt_custom'") as e:
        prepare_camera(np.zeros((H, W, 3), np.uint8), calib, "auto", Rectifier())
    assert e.value.kind == "camera_info" and "rectify:=off" in str(e.value)
    with pytest.raises(FrameRejected, match="camera_info is 320x240 but the image is 160x120"):
        prepare_camera(np.zeros((120, 160, 3), np.uint8), Calibration.from_camera_info(camera_info(K, D, "plumb_bob")),
                       "auto", Rectifier())
    bad = Calibration.from_camera_info(camera_info(K, list(range(1, 16)), "rational_polynomial"))
    with pytest.raises(FrameRejected, match="at most 14"):
        prepare_camera(np.zeros((H, W, 3), np.uint8), bad, "auto", Rectifier())
    bad_P = P_RECT.copy()
    bad_P[2, 2] = 0.0  # a projection that is no pinhole: refused as camera_info, not an OpenCV error
    bad = Calibration.from_camera_info(camera_info(K, D, "plumb_bob", P=bad_P))
    with pytest.raises(FrameRejected, match="K or P"):
        prepare_camera(np.zeros((H, W, 3), np.uint8), bad, "auto", Rectifier())


def test_the_rectified_border_without_source_pixels_gets_no_depth():
    K, D, _ = CASES["plumb_bob"]
    wide = P_RECT.copy()
    wide[0, 0] = wide[1, 1] = 110.0  # a wider view than the raw image covers: empty corners
    calib = Calibration.from_camera_info(camera_info(K, D, "plumb_bob", P=wide))
    camera, rf = prepare_camera(np.full((H, W, 3), 128, np.uint8), calib, "auto", Rectifier())
    assert camera.valid is not None and not camera.valid[0, 0] and camera.valid[H // 2, W // 2]
    assert (rf.rgb[~camera.valid] < 128).all() and (rf.rgb[camera.valid] == 128).all()
    disp = np.full((H // 4, W // 4), 0.25, np.float32)  # 4 m everywhere
    out = process_frame(camera, disp, FrameParams(), FixedScale(1.0))
    np.testing.assert_array_equal(np.isnan(out.depth), ~camera.valid)
    np.testing.assert_allclose(out.K, wide[:, :3])
    out_m = process_frame(camera, disp, FrameParams(output_resolution="model"), FixedScale(1.0))
    assert np.isnan(out_m.depth[0, 0]) and np.isfinite(out_m.depth[H // 8, W // 8])


def test_published_camera_info_is_the_rectified_one_at_the_depth_size():
    from std_msgs.msg import Header

    from monodepth_ros.msgs.camera_info import rescaled_camera_info

    K, D, _ = CASES["rational_polynomial"]
    info = camera_info(K, D, "rational_polynomial", R=cv2.Rodrigues(np.array([0.0, 0.02, 0.0]))[0])
    info.header = Header(frame_id="cam")
    calib = Calibration.from_camera_info(info)
    plain = camera_info(K, np.zeros(5), "plumb_bob")
    assert published_camera_info(plain, Calibration.from_camera_info(plain)) is plain  # D = 0: published as given
    out = rescaled_camera_info(published_camera_info(info, calib), P_RECT[:, :3], (H, W))
    assert out.distortion_model == "plumb_bob" and list(out.d) == [0.0] * 5
    np.testing.assert_array_equal(np.array(out.r).reshape(3, 3), np.eye(3))
    np.testing.assert_allclose(np.array(out.k).reshape(3, 3), P_RECT[:, :3])
    np.testing.assert_allclose(np.array(out.p).reshape(3, 4), P_RECT)
    assert (out.width, out.height, out.header.frame_id) == (W, H, "cam")


def test_rectify_parameter_is_validated():
    assert defaults()["rectify"] == "auto"
    assert validate_parameter("rectify", "off", defaults()) is None
    assert "rectify must be one of" in validate_parameter("rectify", "on", defaults())
