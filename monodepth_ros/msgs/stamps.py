"""Header stamps: builtin_interfaces/Time -> integer nanoseconds, from a decoded message or from its CDR bytes."""

from __future__ import annotations

import struct

__all__ = ["stamp_to_ns", "cdr_header_stamp_ns", "patch_stamp"]


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def cdr_header_stamp_ns(raw: bytes | memoryview) -> int:
    """Header stamp (ns) of a serialised message whose first field is std_msgs/Header, without decoding it.

    CDR layout: 4-byte encapsulation header (byte 1: 0 = big, 1 = little endian), then int32 sec, uint32 nanosec.
    Used on the replay's receive path so that a 2 MB PointCloud2 is not decoded just to read its stamp.
    """
    if len(raw) < 12:
        raise ValueError(f"serialised message too short ({len(raw)} bytes) to hold a header")
    endian = "<" if raw[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def patch_stamp(raw: bytes, stamp_ns: int) -> bytes:
    """Copy of a serialised stamped message with its header stamp replaced (the layout of
    :func:`cdr_header_stamp_ns`)."""
    buf = bytearray(raw)
    endian = "<" if buf[1] & 1 else ">"
    struct.pack_into(endian + "iI", buf, 4, stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000)
    return bytes(buf)
