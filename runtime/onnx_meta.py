"""Read an ONNX file's metadata and operators without the `onnx` package and before building a session.

The runtime must refuse a file that is not a vrnn cell before handing it to
onnxruntime, and it may not depend on `onnx`.  ModelProto is a protobuf message;
this reader walks its fields (wire format only, nothing executed): `metadata_props`
(field 14) as a dict, and the operators of the graph and of every subgraph, so that
a file which claims to be a cell but computes something else can be refused.
"""

from __future__ import annotations

from vrnn.runtime.errors import VrnnError

_IR_VERSION = 1
_GRAPH = 7
_METADATA_PROPS = 14
_GRAPH_NODE = 1  # GraphProto.node
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7  # NodeProto fields
_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS = 6, 11  # AttributeProto.g and .graphs


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


def graph_operators(data: bytes, name: str) -> set[tuple[str, str]]:
    """The (domain, op_type) pairs of every node of the model's graph and of its subgraphs (a Scan's body)."""
    found: set[tuple[str, str]] = set()

    def walk(graph: memoryview, depth: int) -> None:
        if depth > 8:
            raise ValueError("subgraphs nested too deeply")
        for field, wire, node in _fields(graph):
            if field != _GRAPH_NODE or wire != 2:
                continue
            parts = _fields(node)  # type: ignore[arg-type]
            text = {f: bytes(v).decode("utf-8") for f, w, v in parts if w == 2 and f in (_NODE_OP_TYPE, _NODE_DOMAIN)}
            found.add((text.get(_NODE_DOMAIN, ""), text.get(_NODE_OP_TYPE, "")))
            for f, w, attribute in parts:
                if f == _NODE_ATTRIBUTE and w == 2:
                    for g, gw, sub in _fields(attribute):  # type: ignore[arg-type]
                        if g in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS) and gw == 2:
                            walk(sub, depth + 1)  # type: ignore[arg-type]

    try:
        for field, wire, value in _fields(memoryview(data)):
            if field == _GRAPH and wire == 2:
                walk(value, 0)  # type: ignore[arg-type]
    except _Truncated:
        raise VrnnError(f"{name} is truncated or not an ONNX file") from None
    except (ValueError, UnicodeDecodeError):
        raise VrnnError(f"{name} is not an ONNX file") from None
    return found
