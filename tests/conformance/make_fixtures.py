"""Write the conformance fixtures of docs/cell-spec.md: a tiny cell in each weight format, noise, options
and the exact texts; and the texts of a schema-2 cell (cell-v2.onnx, kept from vrnn 0.2) for every case it
can run (one set of options for the whole batch).

    python tests/conformance/make_fixtures.py            # rewrite the cells and cases.json here
    python tests/conformance/make_fixtures.py --check    # regenerate the texts from the committed files

Any runtime (Python, JavaScript, a browser) that is given a case's noise must print the case's text for
each cell byte for byte (the float16 and int8 cells are the same model, so their texts may differ from
the float32 cell's).  The noise of each case is drawn so that no choice is a near-tie (every decision margin
above MIN_MARGIN): neither exp's last bit (math libraries differ) nor the float32 rounding of the logits
(onnxruntime builds and versions differ) can flip a pick.  A case's options are one set for every sample,
or a list, one per sample (a batch of mixed options).  Training the tiny model needs the `train` extra;
--check needs only the runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.choice import SamplingOptions, decision_margin
from vrnn.runtime.loop import ArrayNoise, generate_ids, steps_per_call

HERE = Path(__file__).resolve().parent
CELLS = {"float32": HERE / "cell.onnx", "float16": HERE / "cell-float16.onnx", "int8": HERE / "cell-int8.onnx"}
SCHEMA2_CELL = HERE / "cell-v2.onnx"  # a float32 cell of schema 2, as vrnn 0.2 wrote it (another tiny model)
CASES = HERE / "cases.json"
MIN_MARGIN = 1e-4  # well above float32 rounding of the logits: other onnxruntime builds and versions agree
TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n\n"
) * 20

# name -> (options: one set, or one per sample; prime, length, batch)
CASES_SPEC: dict[str, tuple[dict | list[dict], str, int, int]] = {
    "unfiltered": ({}, "", 60, 1),
    "temperature": ({"temperature": 0.7}, "", 60, 1),
    "hot": ({"temperature": 1.6}, "", 40, 1),
    "top-k": ({"top_k": 5}, "", 40, 1),
    "top-p": ({"top_p": 0.8}, "", 40, 1),
    "top-k-top-p-temperature": ({"temperature": 1.2, "top_k": 8, "top_p": 0.9}, "", 40, 1),
    "greedy": ({"greedy": True}, "", 40, 1),
    "prime": ({}, "ROMEO:\nBut", 50, 1),
    "prime-top-p": ({"top_p": 0.7}, "JULIET:", 30, 1),
    "latent-temperature": ({"latent_temperature": 0.5}, "", 40, 1),
    "greedy-latent-0": ({"greedy": True, "latent_temperature": 0.0}, "", 40, 1),
    "batch-3": ({}, "", 40, 3),
    "batch-2-prime-top-k": ({"top_k": 3}, "O ", 30, 2),
    "long-chunks": ({"temperature": 0.9}, "", 300, 1),  # more than one call of 256 steps
    # One batch, each sample its own options (schema 3): every option in one call.
    "mixed-6": (
        [
            {},
            {"temperature": 0.7},
            {"top_k": 5},
            {"top_p": 0.8, "temperature": 1.3},
            {"greedy": True},
            {"top_k": 3, "top_p": 0.5, "latent_temperature": 0.5},
        ],
        "",
        60,
        6,
    ),
    "mixed-prime": ([{"greedy": True}, {"top_p": 0.9}, {"temperature": 0.6}], "ROMEO:", 40, 3),
    "mixed-top-k-1-and-v": ([{"top_k": 1}, {"top_k": 36}, {"top_p": 1.0}, {"top_k": 2, "temperature": 2.0}], "", 50, 4),
    "mixed-long": ([{"temperature": 0.9}, {"greedy": True, "latent_temperature": 0.0}], "", 300, 2),
}


def options_of(spec: dict | list[dict], batch: int) -> list[SamplingOptions]:
    """Every sample's options."""
    return [SamplingOptions(**o) for o in spec] if isinstance(spec, list) else [SamplingOptions(**spec)] * batch


def run_case(cell: OnnxCell, case: dict) -> tuple[list[str], float]:
    """The texts a conforming runtime prints for `case`, and the smallest decision margin met."""
    batch, length, prime = case["batch"], case["length"], case["prime"]
    options = [o.validate(len(cell.vocab)) for o in options_of(case["options"], batch)]  # (top_k at most V)
    eps = np.array(case["eps"], np.float32).reshape(len(prime) + length, batch, cell.config.latent_size)
    uniform = np.array(case["uniform"], np.float64).reshape(length, batch)
    context = np.concatenate([cell.vocab.encode(cell.start_char), cell.vocab.encode(prime)])
    margins: list[float] = []

    def seen(logits: np.ndarray, u: np.ndarray) -> None:
        margins.extend(float(decision_margin(logits[b : b + 1], u[b : b + 1], o)[0]) for b, o in enumerate(options))

    ids = generate_ids(cell.steps, cell.initial_state(batch), context, length, ArrayNoise(eps, uniform), options,
                       on_logits=seen, per_row=cell.chooses_per_row)  # fmt: skip
    rows = np.stack(list(ids), axis=1)
    return [prime + cell.vocab.decode(row) for row in rows], min(margins)


def runs_on(cell: OnnxCell, case: dict) -> bool:
    """Whether `cell` can run `case`: a schema-2 cell takes one set of options for the whole batch."""
    return cell.chooses_per_row or not isinstance(case["options"], list)


def make_case(cells: dict[str, OnnxCell], name: str, spec: tuple[dict | list[dict], str, int, int],
              seed: int) -> dict:  # fmt: skip
    """A case whose noise leaves every cell's every decision clear of a near-tie, with each cell's texts."""
    options, prime, length, batch = spec
    latent = cells["float32"].config.latent_size
    assert all(cell.config.latent_size == latent for cell in cells.values())
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        case = {
            "name": name,
            "options": options,
            "prime": prime,
            "length": length,
            "batch": batch,
            "steps_per_call": steps_per_call(batch),  # a schema-2 cell with top-k, top-p or greedy: 1
            # float32 values written in their shortest float32 form: parsed as a double and rounded to float32
            # (Float32Array, np.float32) they are exactly the values used here
            "eps": [float(str(x)) for x in rng.standard_normal((len(prime) + length) * batch * latent, np.float32)],
            "uniform": rng.random(length * batch).tolist(),
        }
        runs = {weights: run_case(cell, case) for weights, cell in cells.items() if runs_on(cell, case)}
        if min(margin for _, margin in runs.values()) > MIN_MARGIN:
            case["expected"] = {weights: texts for weights, (texts, _) in runs.items()}
            return case
    raise RuntimeError(f"{name}: no noise without near-ties in 1000 draws")


def train_cells() -> None:
    """Train the tiny model and export it in every weight format (CELLS)."""
    from vrnn.export.cli import export_cell
    from vrnn.training.cli import main as train_main

    with tempfile.TemporaryDirectory() as tmp:
        corpus, ckpt = Path(tmp) / "romeo.txt", Path(tmp) / "tiny.pt"
        corpus.write_text(TEXT, encoding="utf-8")
        train_main([str(corpus), "-o", str(ckpt), "--preset", "tiny", "--steps", "150", "--seq-len", "32",
                    "--threads", "1", "--quiet", "--seed", "7"], standalone_mode=False)  # fmt: skip
        for weights, target in CELLS.items():
            export_cell(str(ckpt), str(target), weights=weights)


def all_cells() -> dict[str, Path]:
    """Every fixture cell by the key its texts have in a case's `expected`."""
    return {**CELLS, "schema2": SCHEMA2_CELL}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate the texts and compare; write nothing")
    args = parser.parse_args()
    if args.check:
        cells = {weights: OnnxCell(path) for weights, path in all_cells().items()}
        wrong = [f"{c['name']} ({weights})" for c in json.loads(CASES.read_text())["cases"]
                 for weights, cell in cells.items()
                 if runs_on(cell, c) and run_case(cell, c)[0] != c["expected"][weights]]  # fmt: skip
        print("all cases reproduce" if not wrong else f"cases that differ: {wrong}")
        return 1 if wrong else 0
    train_cells()
    cells = {weights: OnnxCell(path) for weights, path in all_cells().items()}
    cases = [make_case(cells, name, spec, seed) for seed, (name, spec) in enumerate(CASES_SPEC.items())]
    document = {
        "about": "Conformance cases of docs/cell-spec.md (schema 3). options: one set for every sample, or a "
        "list of one per sample. eps: float32 values in C order [prime + length, batch, latent]; uniform: "
        "float64 in C order [length, batch]; expected: per cell below (float32, float16 and int8: one model "
        "of schema 3; schema2: another, of schema 2, for the cases with one set of options), one text per "
        "sample, the prime followed by the sampled characters (no trailing newline).",
        "cells": {weights: path.name for weights, path in all_cells().items()},
        "min_margin": MIN_MARGIN,
        "cases": cases,
    }
    CASES.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    sizes = ", ".join(f"{path.name} ({path.stat().st_size} bytes)" for path in CELLS.values())
    print(f"wrote {sizes} and {len(cases)} cases to {CASES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
