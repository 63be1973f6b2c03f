"""A compact binary form for a record's volumes: one blob per operation or subscription.

A store that keeps every volume in its own row pays a row header, an index entry and a round trip
per volume; one blob per record is read and written whole, which is how the record is always used
(the spatial index lives elsewhere). The footprint keeps its own validated form
(:meth:`Footprint.to_bytes`), so decoding never re-validates or re-densifies a polygon.

Layout (little-endian)::

    b"V" version:u8 count:u32
    count x ( altitude_lower_m:f64 altitude_upper_m:f64 start:f64 end:f64 length:u32 footprint )
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from deconfliction.geo import Volume, footprint_from_bytes

FORMAT_VERSION: Final = 1
_HEAD: Final = struct.Struct("<cBI")
_VOLUME: Final = struct.Struct("<4dI")


def encode_volumes(volumes: Sequence[Volume]) -> bytes:
    """One blob holding ``volumes`` in order, exact to the bit (float64 throughout)."""
    return encode_stored(
        [
            (v.altitude_lower_m, v.altitude_upper_m, v.start, v.end, v.footprint.to_bytes())
            for v in volumes
        ]
    )


def encode_stored(volumes: Sequence[tuple[float, float, float, float, bytes]]) -> bytes:
    """The same blob from each volume's altitude band, time window and footprint bytes (as
    :meth:`Footprint.to_bytes` made them), without decoding a footprint: for migrations."""
    parts = [_HEAD.pack(b"V", FORMAT_VERSION, len(volumes))]
    for lo, hi, start, end, footprint in volumes:
        parts.append(_VOLUME.pack(lo, hi, start, end, len(footprint)))
        parts.append(footprint)
    return b"".join(parts)


def is_encoded(blob: bytes) -> bool:
    """Whether ``blob`` has this layout throughout (its head, then volumes whose lengths add up
    to the blob's), without decoding a footprint."""
    if len(blob) < _HEAD.size:
        return False
    magic, version, count = _HEAD.unpack_from(blob, 0)
    if magic != b"V" or version != FORMAT_VERSION:
        return False
    offset = _HEAD.size
    for _ in range(count):
        if offset + _VOLUME.size > len(blob):
            return False
        offset += _VOLUME.size + _VOLUME.unpack_from(blob, offset)[4]
    return offset == len(blob)


def decode_volumes(blob: bytes | bytearray | memoryview) -> tuple[Volume, ...]:
    """Inverse of :func:`encode_volumes`; trusts that the volumes were validated when stored."""
    data = bytes(blob)
    magic, version, count = _HEAD.unpack_from(data, 0)
    if magic != b"V" or version != FORMAT_VERSION:
        raise ValueError(f"not a stored volume list (format {magic!r} {version})")
    offset = _HEAD.size
    out = []
    for _ in range(count):
        lo, hi, start, end, length = _VOLUME.unpack_from(data, offset)
        offset += _VOLUME.size
        footprint = footprint_from_bytes(data[offset : offset + length])
        offset += length
        out.append(Volume(footprint, lo, hi, start, end))
    if offset != len(data):
        raise ValueError("trailing bytes after the stored volumes")
    return tuple(out)
