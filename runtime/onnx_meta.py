"""Read an ONNX file's metadata without the `onnx` package and before building a session.

The runtime must refuse a file that is not a vrnn cell before handing it to
onnxruntime, and it may not depend on `onnx`.  ModelProto is a protobuf message;
this reader walks its top-level fields (wire format only, nothing executed) and
returns `metadata_props` (field 14) as a dict.
"""

from __future__ import annotations

from vrnn.runtime.errors import VrnnError

_IR_VERSION = 1
_GRAPH = 7
_METADATA_PROPS = 14


class _Truncated(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> list[tuple[int, int, object]]:
    """Top-level (field number, wire type, value) triples of a protobuf message."""
    pos, out = 0, []
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise _Truncated
        out.append((field, wire, value))
    return out


def read_metadata(data: bytes, name: str) -> dict[str, str]:
    """Return the metadata_props of the ONNX model in `data`; `name` is used in error messages."""
    try:
        fields = _fields(memoryview(data))  # slices of a memoryview are views: the graph is not copied
        numbers = {f for f, _, _ in fields}
        if not fields or _IR_VERSION not in numbers or _GRAPH not in numbers:
            raise ValueError("no ir_version or graph")
        meta: dict[str, str] = {}
        for field, wire, value in fields:
            if field == _METADATA_PROPS and wire == 2:
                entry = {f: v for f, w, v in _fields(value) if w == 2}  # type: ignore[arg-type]
                key = bytes(entry.get(1, b"")).decode("utf-8")
                meta[key] = bytes(entry.get(2, b"")).decode("utf-8")
    except _Truncated:
        raise VrnnError(f"{name} is truncated or not an ONNX file") from None
    except (ValueError, UnicodeDecodeError):
        raise VrnnError(f"{name} is not an ONNX file") from None
    return meta
