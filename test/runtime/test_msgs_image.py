"""The Image/CompressedImage converter against OpenCV references: every encoding, padded rows, byte order, and
the errors for malformed messages."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from monodepth_ros.msgs.image import (
    compressed_to_rgb,
    depth_msg_to_array,
    depth_to_image_msg,
    image_msg_to_array,
    image_msg_to_rgb,
    rgb_to_image_msg,
)

pytestmark = pytest.mark.rosdistro  # ROS-facing: `make test-jazzy` runs this module on ROS 2 Jazzy too

H, W = 7, 11
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
RGBA = np.concatenate([RGB, RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)], axis=2)
RGB16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)


def make_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    """An Image-like message holding ``pixels`` (H, W[, C]) with ``pad`` junk bytes after every row."""
    dt = pixels.dtype.newbyteorder(">" if bigendian else "<") if pixels.dtype.itemsize > 1 else pixels.dtype
    rows = pixels.astype(dt).reshape(pixels.shape[0], -1).view(np.uint8)
    junk = np.full((pixels.shape[0], pad), 0xAB, np.uint8)
    data = np.concatenate([rows, junk], axis=1)
    return SimpleNamespace(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                           is_bigendian=bigendian, step=data.shape[1], data=data.tobytes())


# (encoding, pixels as stored, OpenCV reference RGB)
CASES = [
    ("rgb8", RGB, RGB),
    ("bgr8", np.ascontiguousarray(RGB[..., ::-1]), RGB),
    ("rgba8", RGBA, cv2.cvtColor(RGBA, cv2.COLOR_RGBA2RGB)),
    ("bgra8", cv2.cvtColor(RGBA, cv2.COLOR_RGBA2BGRA), cv2.cvtColor(RGBA, cv2.COLOR_RGBA2RGB)),
    ("8UC3", np.ascontiguousarray(RGB[..., ::-1]), RGB),  # OpenCV's generic 8-bit colour: BGR, as cv_bridge reads it
    ("8UC4", cv2.cvtColor(RGBA, cv2.COLOR_RGBA2BGRA), cv2.cvtColor(RGBA, cv2.COLOR_RGBA2RGB)),
    ("mono8", RGB[..., 0], cv2.cvtColor(RGB[..., 0], cv2.COLOR_GRAY2RGB)),
    ("8UC1", RGB[..., 1], cv2.cvtColor(RGB[..., 1], cv2.COLOR_GRAY2RGB)),
    ("rgb16", RGB16, cv2.convertScaleAbs(RGB16, alpha=255.0 / 65535.0)),
    ("bgr16", np.ascontiguousarray(RGB16[..., ::-1]), cv2.convertScaleAbs(RGB16, alpha=255.0 / 65535.0)),
    ("mono16", RGB16[..., 0], cv2.cvtColor(cv2.convertScaleAbs(RGB16[..., 0], alpha=255.0 / 65535.0),
                                           cv2.COLOR_GRAY2RGB)),
    ("16UC1", RGB16[..., 2], cv2.cvtColor(cv2.convertScaleAbs(RGB16[..., 2], alpha=255.0 / 65535.0),
                                          cv2.COLOR_GRAY2RGB)),
]


@pytest.mark.parametrize("pad", [0, 5], ids=["packed", "padded_rows"])
@pytest.mark.parametrize("bigendian", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("encoding,pixels,expected", CASES, ids=[c[0] for c in CASES])
def test_every_encoding_matches_opencv_reference(encoding, pixels, expected, pad, bigendian):
    rgb = image_msg_to_rgb(make_msg(pixels, encoding, pad=pad, bigendian=bigendian))
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)


def test_big_endian_16_bit_values_are_read_in_the_declared_byte_order():
    msg = make_msg(RGB16[..., 0], "mono16", pad=3, bigendian=True)
    np.testing.assert_array_equal(image_msg_to_array(msg), RGB16[..., 0])
    msg.is_bigendian = False  # same bytes, wrong declared order -> byte-swapped values
    np.testing.assert_array_equal(image_msg_to_array(msg), RGB16[..., 0].byteswap())


def test_depth_message_round_trips_with_nan_and_rep118_fields():
    depth = RNG.uniform(0.5, 80, (H, W)).astype(np.float32)
    depth[2, 3] = np.nan
    msg = depth_to_image_msg(depth, _header())
    assert msg.encoding == "32FC1" and msg.step == W * 4 and msg.is_bigendian == (sys.byteorder == "big")
    back = image_msg_to_array(msg)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(depth))
    np.testing.assert_array_equal(back[~np.isnan(back)], depth[~np.isnan(depth)])


@pytest.mark.parametrize("bigendian", [False, True], ids=["little", "big"])
def test_depth_msg_to_array_respects_step_and_millimetres(bigendian):
    depth = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    out = depth_msg_to_array(make_msg(depth, "32FC1", pad=8, bigendian=bigendian))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, depth)
    mm = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000)
    np.testing.assert_allclose(depth_msg_to_array(make_msg(mm, "16UC1", pad=2, bigendian=bigendian)), mm / 1000.0)
    with pytest.raises(ValueError, match="encoding 'rgb8'"):
        depth_msg_to_array(make_msg(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    short = make_msg(depth, "32FC1")
    short.data = short.data[:-1]
    with pytest.raises(ValueError, match=r"step\*height"):
        depth_msg_to_array(short)


def test_depth_msg_to_array_can_set_invalid_pixels():
    depth = np.array([[1.5, 0.0, np.nan], [np.inf, -2.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(depth_msg_to_array(make_msg(depth, "32FC1")), depth)  # kept as recorded
    np.testing.assert_array_equal(depth_msg_to_array(make_msg(depth, "32FC1"), invalid_to=0.0),
                                  [[1.5, 0.0, 0.0], [0.0, 0.0, 3.0]])


def test_rgb_message_round_trips():
    msg = rgb_to_image_msg(RGB, _header())
    assert msg.encoding == "rgb8" and msg.step == W * 3
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_image_decodes_like_cv2_imdecode(ext):
    ok, buf = cv2.imencode(ext, RGB[..., ::-1])
    assert ok
    msg = SimpleNamespace(format=ext[1:], data=buf.tobytes())
    expected = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(compressed_to_rgb(msg), expected)
    if ext == ".png":  # lossless: exactly the original
        np.testing.assert_array_equal(compressed_to_rgb(msg), RGB)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "unknown image encoding 'yuv422'"),
        (lambda m: setattr(m, "data", b""), "empty image data"),
        (lambda m: setattr(m, "data", m.data[:-1]), "step*height"),
        (lambda m: setattr(m, "step", W * 3 - 1), "shorter than one row"),
        (lambda m: setattr(m, "height", 0), "zero size"),
        (lambda m: setattr(m, "encoding", "32FC1"), "not a colour or grey picture"),
    ],
    ids=["unknown_encoding", "empty", "size_not_step_times_height", "step_too_short", "zero_height", "depth"],
)
def test_malformed_images_raise_value_error_naming_the_problem(mutate, message):
    msg = make_msg(RGB, "rgb8", pad=2)
    mutate(msg)
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("(", r"\(")):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("data,message", [(b"", "empty compressed"), (b"\x00garbage", "could not decode")])
def test_undecodable_compressed_image_raises_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=data))


def _header():
    from std_msgs.msg import Header

    return Header(frame_id="camera_optical_frame")
