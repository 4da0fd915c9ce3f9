"""CameraInfo: K read and validated from ``k``, and the CameraInfo of a resized output (K, P, size, copied
calibration fields)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from monodepth_ros.geometry import scale_intrinsics
from monodepth_ros.msgs.camera_info import camera_info_K, rescaled_camera_info

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too

K = np.array([[500.0, 0.0, 319.5], [0.0, 480.0, 239.5], [0.0, 0.0, 1.0]])


def _info(P: np.ndarray):
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    return CameraInfo(header=Header(frame_id="cam_optical"), height=480, width=640, distortion_model="plumb_bob",
                      d=[0.1, -0.2, 0.0, 0.0, 0.01], k=K.ravel().tolist(), r=np.eye(3).ravel().tolist(),
                      p=P.ravel().tolist())


def test_camera_info_K_is_3x3_float64_and_rejects_zero_k():
    np.testing.assert_array_equal(camera_info_K(SimpleNamespace(k=K.ravel().tolist())), K)
    with pytest.raises(ValueError, match="focal"):
        camera_info_K(SimpleNamespace(k=[0.0] * 9))


def test_rescaled_camera_info_scales_p_and_copies_calibration():
    P = np.hstack([K, [[-30.0], [12.0], [0.0]]])  # a right camera of a stereo pair: Tx, Ty in P
    K_out = scale_intrinsics(K, 320 / 640, 192 / 480)
    out = rescaled_camera_info(_info(P), K_out, (192, 320))
    assert (out.height, out.width) == (192, 320) and out.header.frame_id == "cam_optical"
    assert out.distortion_model == "plumb_bob" and list(out.d) == [0.1, -0.2, 0.0, 0.0, 0.01]
    np.testing.assert_array_equal(np.asarray(out.r), np.eye(3).ravel())
    np.testing.assert_allclose(np.asarray(out.k).reshape(3, 3), K_out)
    P_out = np.asarray(out.p).reshape(3, 4)
    np.testing.assert_allclose(P_out[:, :3], K_out)
    np.testing.assert_allclose(P_out[:2, 3], [-30.0 * 0.5, 12.0 * 0.4])


def test_rescaled_camera_info_without_p_uses_k_out():
    K_out = scale_intrinsics(K, 0.5, 0.5)
    P_out = np.asarray(rescaled_camera_info(_info(np.zeros((3, 4))), K_out, (240, 320)).p).reshape(3, 4)
    np.testing.assert_allclose(P_out[:, :3], K_out)
    np.testing.assert_array_equal(P_out[:, 3], 0.0)
