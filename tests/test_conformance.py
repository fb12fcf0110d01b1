"""The conformance fixtures of docs/cell-spec.md on the Python runtime: given each case's noise, the exact text.

The same files are what the JavaScript runtime and the browser page are tested against."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vrnn.runtime.cell import OnnxCell

sys.path.insert(0, str(Path(__file__).parent / "conformance"))
from make_fixtures import CASES, CELLS, run_case

DOCUMENT = json.loads(CASES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cells() -> dict[str, OnnxCell]:
    return {weights: OnnxCell(path) for weights, path in CELLS.items()}


@pytest.mark.parametrize("weights", list(CELLS))
@pytest.mark.parametrize("case", DOCUMENT["cases"], ids=[c["name"] for c in DOCUMENT["cases"]])
def test_case_gives_its_text_byte_for_byte(cells: dict[str, OnnxCell], case: dict, weights: str) -> None:
    cell = cells[weights]
    assert cell.info.weights == weights  # the metadata names the format
    texts, margin = run_case(cell, case)
    assert texts == case["expected"][weights]
    assert margin > DOCUMENT["min_margin"]  # no choice is a float near-tie


def test_the_weight_formats_shrink_the_file() -> None:
    sizes = {weights: path.stat().st_size for weights, path in CELLS.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_the_cases_cover_every_option() -> None:
    seen = {key for case in DOCUMENT["cases"] for key in case["options"]}
    assert seen == {"temperature", "top_k", "top_p", "greedy", "latent_temperature"}
    assert any(c["prime"] for c in DOCUMENT["cases"]) and any(c["batch"] > 1 for c in DOCUMENT["cases"])
    assert any(c["length"] > c["steps_per_call"] > 1 for c in DOCUMENT["cases"])  # several calls
