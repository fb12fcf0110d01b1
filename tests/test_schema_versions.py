"""The Python runtime against tests/conformance/schema-versions.json: the vrnn.schema_version strings every
runtime must accept or refuse (the JavaScript runtime is tested against the same list)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vrnn.runtime.cell import parse_cell_metadata
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.onnx_meta import read_metadata

CONFORMANCE = Path(__file__).parent / "conformance"
VERSIONS = json.loads((CONFORMANCE / "schema-versions.json").read_text(encoding="utf-8"))
META = read_metadata((CONFORMANCE / "cell.onnx").read_bytes(), "cell.onnx")


@pytest.mark.parametrize("version", VERSIONS["accepted"], ids=ascii)
def test_accepted_schema_version(version: str) -> None:
    parse_cell_metadata({**META, "vrnn.schema_version": version}, "cell.onnx")


@pytest.mark.parametrize("version", VERSIONS["refused"], ids=ascii)
def test_refused_schema_version(version: str) -> None:
    with pytest.raises(VrnnError, match="schema version"):
        parse_cell_metadata({**META, "vrnn.schema_version": version}, "cell.onnx")
