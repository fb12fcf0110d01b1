"""The conformance fixtures of docs/cell-spec.md on the Python runtime: given each case's noise, the exact text.

The same files are what the JavaScript runtime and the browser page are tested against."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent / "conformance"))
from make_fixtures import CASES, CELLS, all_cells, run_case, runs_on

DOCUMENT = json.loads(CASES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cells() -> dict[str, OnnxCell]:
    return {weights: OnnxCell(path) for weights, path in all_cells().items()}


@pytest.mark.parametrize("weights", list(all_cells()))
@pytest.mark.parametrize("case", DOCUMENT["cases"], ids=[c["name"] for c in DOCUMENT["cases"]])
def test_case_gives_its_text_byte_for_byte(cells: dict[str, OnnxCell], case: dict, weights: str) -> None:
    cell = cells[weights]
    assert cell.info.weights == ("float32" if weights == "schema2" else weights)  # the metadata names the format
    assert cell.info.version == (2 if weights == "schema2" else 3)
    if not runs_on(cell, case):  # a batch of mixed options: schema 3 only
        assert weights not in case["expected"]
        return
    texts, margin = run_case(cell, case)
    assert texts == case["expected"][weights]
    assert margin > DOCUMENT["min_margin"]  # no choice is a float near-tie


def test_the_weight_formats_shrink_the_file() -> None:
    sizes = {weights: path.stat().st_size for weights, path in CELLS.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_a_schema_2_cell_refuses_a_batch_of_mixed_options(cells: dict[str, OnnxCell]) -> None:
    mixed = next(c for c in DOCUMENT["cases"] if isinstance(c["options"], list))
    with pytest.raises(UsageError, match="schema-2 cell takes one set of options"):
        run_case(cells["schema2"], mixed)


def test_the_cases_cover_every_option_alone_and_mixed_in_one_batch() -> None:
    def sets(case: dict) -> list[dict]:
        return case["options"] if isinstance(case["options"], list) else [case["options"]]

    seen = {key for case in DOCUMENT["cases"] for options in sets(case) for key in options}
    assert seen == {"temperature", "top_k", "top_p", "greedy", "latent_temperature"}
    mixed = [c for c in DOCUMENT["cases"] if isinstance(c["options"], list)]
    assert {key for case in mixed for options in case["options"] for key in options} == seen
    assert any(c["prime"] for c in mixed) and any(c["length"] > c["steps_per_call"] for c in mixed)
    assert any(c["prime"] for c in DOCUMENT["cases"]) and any(c["batch"] > 1 for c in DOCUMENT["cases"])
    assert any(c["length"] > c["steps_per_call"] > 1 for c in DOCUMENT["cases"])  # several calls
