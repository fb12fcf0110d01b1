"""Write the conformance fixtures of docs/cell-spec.md: a tiny cell, noise, options and the exact text.

    python tests/conformance/make_fixtures.py            # rewrite cell.onnx and cases.json here
    python tests/conformance/make_fixtures.py --check    # regenerate the texts from the committed files

Any runtime (Python, JavaScript, a browser) that is given a case's noise must print the case's text
byte for byte.  The noise of each case is drawn so that no choice is a near-tie (every decision margin
above MIN_MARGIN): neither exp's last bit (math libraries differ) nor the float32 rounding of the logits
(onnxruntime builds and versions differ) can flip a pick.  Training the tiny model needs the `train`
extra; --check needs only the runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.loop import ArrayNoise, generate_ids, steps_per_call
from vrnn.runtime.sampling import SamplingOptions, decision_margin

HERE = Path(__file__).resolve().parent
CELL = HERE / "cell.onnx"
CASES = HERE / "cases.json"
MIN_MARGIN = 1e-4  # well above float32 rounding of the logits: other onnxruntime builds and versions agree
TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n\n"
) * 20

# name -> (options, prime, length, batch)
CASES_SPEC: dict[str, tuple[dict, str, int, int]] = {
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
}


def options_of(spec: dict) -> SamplingOptions:
    return SamplingOptions(
        spec.get("temperature", 1.0), spec.get("top_k"), spec.get("top_p"), spec.get("greedy", False),
        spec.get("latent_temperature", 1.0),
    )  # fmt: skip


def run_case(cell: OnnxCell, case: dict) -> tuple[list[str], float]:
    """The texts a conforming runtime prints for `case`, and the smallest decision margin met."""
    options = options_of(case["options"])
    batch, length, prime = case["batch"], case["length"], case["prime"]
    eps = np.array(case["eps"], np.float32).reshape(len(prime) + length, batch, cell.config.latent_size)
    uniform = np.array(case["uniform"], np.float64).reshape(length, batch)
    context = np.concatenate([cell.vocab.encode(cell.start_char), cell.vocab.encode(prime)])
    margins: list[float] = []

    def seen(logits: np.ndarray, u: np.ndarray) -> None:
        margins.append(float(decision_margin(logits, u, options).min()))

    ids = generate_ids(cell.steps, cell.initial_state(batch), context, length, ArrayNoise(eps, uniform), options,
                       on_logits=seen)  # fmt: skip
    rows = np.stack(list(ids), axis=1)
    return [prime + cell.vocab.decode(row) for row in rows], min(margins)


def make_case(cell: OnnxCell, name: str, spec: tuple[dict, str, int, int], seed: int) -> dict:
    options, prime, length, batch = spec
    latent = cell.config.latent_size
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        case = {
            "name": name,
            "options": options,
            "prime": prime,
            "length": length,
            "batch": batch,
            "steps_per_call": steps_per_call(batch) if options_of(options).unfiltered else 1,
            # float32 values written in their shortest float32 form: parsed as a double and rounded to float32
            # (Float32Array, np.float32) they are exactly the values used here
            "eps": [float(str(x)) for x in rng.standard_normal((len(prime) + length) * batch * latent, np.float32)],
            "uniform": rng.random(length * batch).tolist(),
        }
        texts, margin = run_case(cell, case)
        if margin > MIN_MARGIN:
            case["expected"] = texts
            return case
    raise RuntimeError(f"{name}: no noise without near-ties in 1000 draws")


def train_cell(target: Path) -> None:
    from vrnn.export.cli import export_cell
    from vrnn.training.cli import main as train_main

    with tempfile.TemporaryDirectory() as tmp:
        corpus, ckpt = Path(tmp) / "romeo.txt", Path(tmp) / "tiny.pt"
        corpus.write_text(TEXT, encoding="utf-8")
        train_main([str(corpus), "-o", str(ckpt), "--preset", "tiny", "--steps", "150", "--seq-len", "32",
                    "--threads", "1", "--quiet", "--seed", "7"], standalone_mode=False)  # fmt: skip
        export_cell(str(ckpt), str(target))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate the texts and compare; write nothing")
    args = parser.parse_args()
    if args.check:
        cell = OnnxCell(CELL)
        wrong = [c["name"] for c in json.loads(CASES.read_text())["cases"] if run_case(cell, c)[0] != c["expected"]]
        print("all cases reproduce" if not wrong else f"cases that differ: {wrong}")
        return 1 if wrong else 0
    train_cell(CELL)
    cell = OnnxCell(CELL)
    cases = [make_case(cell, name, spec, seed) for seed, (name, spec) in enumerate(CASES_SPEC.items())]
    document = {
        "about": "Conformance cases of docs/cell-spec.md (schema 2). eps: float32 values in C order "
        "[prime + length, batch, latent]; uniform: float64 in C order [length, batch]; expected: one text per "
        "sample, the prime followed by the sampled characters (no trailing newline).",
        "cell": CELL.name,
        "min_margin": MIN_MARGIN,
        "cases": cases,
    }
    CASES.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {CELL} ({CELL.stat().st_size} bytes) and {len(cases)} cases to {CASES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
