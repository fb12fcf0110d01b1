"""Check an exported cell against the PyTorch step and the numpy sampler on the same random inputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from vrnn.export.thresholds import (
    AGREEMENT_BATCH,
    AGREEMENT_STEPS,
    VERIFY_BATCHES,
    VERIFY_STEPS,
)
from vrnn.export.torch_cell import TorchCell
from vrnn.runtime import schema
from vrnn.runtime.cell import OnnxCell, session_options
from vrnn.runtime.choice import RowOptions, SamplingOptions, choose_rows
from vrnn.runtime.scoring import CellAgreement, compare_cells


def random_inputs(
    config: schema.ModelConfig, batch: int, steps: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Plausible cell inputs: states in the ranges the model produces, standard normal and uniform noise."""
    return {
        schema.INPUT_PREV_CHAR: rng.integers(0, config.vocab_size, batch, dtype=np.int64),
        schema.INPUT_H: rng.uniform(-1, 1, (config.layers, batch, config.hidden_size)).astype(np.float32),
        schema.INPUT_PHI_Z: (rng.standard_normal((batch, config.embed_size)) * 0.5).astype(np.float32),
        schema.INPUT_EPS: rng.standard_normal((steps, batch, config.latent_size)).astype(np.float32),
        schema.INPUT_UNIFORM: rng.random((steps, batch)),
        **row_feed(mixed_rows(config.vocab_size, batch, rng)),
    }


def mixed_rows(vocab_size: int, batch: int, rng: np.random.Generator) -> RowOptions:
    """`batch` rows of mixed options: temperatures, top-k (1, a few, the whole vocabulary), top-p, greedy, and
    rows with none (a batch of one has none, so that the unfiltered branch is checked too)."""
    choices = [SamplingOptions(temperature=0.8), SamplingOptions(top_k=1), SamplingOptions(top_k=vocab_size),
               SamplingOptions(top_k=5, temperature=1.3), SamplingOptions(top_p=0.9), SamplingOptions(greedy=True),
               SamplingOptions(top_k=3, top_p=0.5, temperature=0.6), SamplingOptions(top_p=1.0)]  # fmt: skip
    if batch == 1:
        return RowOptions.of([choices[0]])
    return RowOptions.of([choices[i] for i in rng.integers(0, len(choices), batch)])


def row_feed(rows: RowOptions) -> dict[str, np.ndarray]:
    """A schema-3 cell's option inputs for `rows`."""
    return {schema.INPUT_TEMPERATURE: rows.temperature, schema.INPUT_TOP_K: rows.top_k, schema.INPUT_TOP_P: rows.top_p}


def edge_cases(vocab_size: int) -> tuple[np.ndarray, np.ndarray, RowOptions]:
    """Logits, uniforms and options on the edges of docs/cell-spec.md section 4: ties (every logit equal, and
    a tie at the top), k = 1 and k = V, a top-p just above and just below a candidate's boundary, u = 0 and
    u just below 1, a temperature that sends all but the top to zero weight."""
    V = vocab_size
    ramp = np.linspace(0.0, -3.0, V, dtype=np.float32)
    tied_top = ramp.copy()
    tied_top[[0, V // 2]] = 1.0
    flat = np.zeros(V, np.float32)
    probs = np.exp(ramp.astype(np.float64) - ramp.max())
    probs /= np.cumsum(probs)[-1]
    boundary = float(np.cumsum(probs)[2])  # the mass of the first three: top-p at it keeps three or four
    cases = []
    for logits in (ramp, tied_top, flat):
        for u in (0.0, np.nextafter(1.0, 0.0), 0.5):
            for options in (SamplingOptions(), SamplingOptions(top_k=1), SamplingOptions(top_k=V),
                            SamplingOptions(top_k=2), SamplingOptions(greedy=True),
                            SamplingOptions(top_p=boundary), SamplingOptions(top_p=np.nextafter(boundary, 1.0)),
                            SamplingOptions(top_p=np.nextafter(boundary, 0.0)), SamplingOptions(top_p=1e-9),
                            SamplingOptions(temperature=1e-6), SamplingOptions(temperature=50.0, top_k=3)):  # fmt: skip
                cases.append((logits, u, options))
    logits = np.stack([c[0] for c in cases])
    uniform = np.array([c[1] for c in cases])
    return logits, uniform, RowOptions.of([c[2] for c in cases])


def edge_disagreements(vocab_size: int, opset: int) -> int:
    """How many edge cases (edge_cases) the cell's sampling nodes pick unlike vrnn.runtime.choice: 0 when the
    graph's arithmetic is the specification's."""
    from vrnn.export.onnx_cell import sampling_graph

    logits, uniform, rows = edge_cases(vocab_size)
    plain = (rows.top_k == 0) & (rows.top_p >= 1)
    wrong = 0
    # The sorting graph takes every case; the plain one (what a batch without top-k or top-p runs) its own.
    for filtering, cases in ((True, np.ones(len(logits), bool)), (False, plain)):
        model = sampling_graph(vocab_size, opset, filtering).SerializeToString()
        session = ort.InferenceSession(model, sess_options=session_options(1), providers=["CPUExecutionProvider"])
        some = RowOptions(rows.temperature[cases], rows.top_k[cases], rows.top_p[cases])
        feed = {"logits": logits[cases], "uniform": uniform[cases, None], **row_feed(some)}
        (chars,) = session.run(None, feed)
        wrong += int(np.sum(chars != choose_rows(logits[cases], uniform[cases], some)))
    return wrong


def max_differences(
    onnx_bytes: bytes, torch_cell: TorchCell, batches: tuple[int, ...] = VERIFY_BATCHES, seed: int = 0
) -> dict[int, dict[str, float]]:
    """Per batch size: max |onnxruntime - torch| of logits, h_out and phi_z_out over VERIFY_STEPS steps,
    and "chars", the number of picks where the graph's choice differs from the numpy sampler's on the
    same logits (0 when the in-graph sampling is right).

    PyTorch is driven along the characters the graph picked, so that a float near-tie between the two
    backends cannot send them down different texts and turn a 1e-7 difference into a large one.
    """
    # As the runtime runs it (OnnxCell): one session, weights packed, for every batch size.
    session = ort.InferenceSession(onnx_bytes, sess_options=session_options(1), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    report: dict[int, dict[str, float]] = {}
    for batch in batches:
        feed = random_inputs(torch_cell.config, batch, VERIFY_STEPS, rng)
        chars, logits, h, phi_z = session.run(None, feed)
        rows = RowOptions(feed[schema.INPUT_TEMPERATURE], feed[schema.INPUT_TOP_K], feed[schema.INPUT_TOP_P])
        state = {schema.INPUT_H: feed[schema.INPUT_H], schema.INPUT_PHI_Z: feed[schema.INPUT_PHI_Z]}
        prev, torch_logits, wrong_picks = feed[schema.INPUT_PREV_CHAR], [], 0
        for t in range(VERIFY_STEPS):
            step_logits, state = torch_cell.step(prev, state, feed[schema.INPUT_EPS][t])
            torch_logits.append(step_logits)
            expected = choose_rows(logits[t], feed[schema.INPUT_UNIFORM][t], rows)
            wrong_picks += int(np.sum(expected != chars[t]))
            prev = chars[t]
        report[batch] = {
            schema.OUTPUT_LOGITS: float(np.max(np.abs(logits - np.stack(torch_logits)))),
            schema.OUTPUT_H: float(np.max(np.abs(h - state[schema.INPUT_H]))),
            schema.OUTPUT_PHI_Z: float(np.max(np.abs(phi_z - state[schema.INPUT_PHI_Z]))),
            schema.OUTPUT_CHARS: float(wrong_picks),
        }
    return report


def lossy_agreement(reference: bytes, candidate: bytes, seed: int = 0) -> CellAgreement:
    """Compare the cell `candidate` with the float32 `reference` of the same model: the reference writes
    AGREEMENT_BATCH texts of AGREEMENT_STEPS characters (seeded), then both are teacher-forced along them
    with the same latent noise (vrnn.runtime.scoring.compare_cells)."""
    ref_cell, cand_cell = OnnxCell(reference, batch=AGREEMENT_BATCH), OnnxCell(candidate, batch=AGREEMENT_BATCH)
    config, rng = ref_cell.config, np.random.default_rng(seed)
    start = ref_cell.vocab.chars.index(ref_cell.start_char)
    prev = np.full(AGREEMENT_BATCH, start, np.int64)
    eps = rng.standard_normal((AGREEMENT_STEPS, AGREEMENT_BATCH, config.latent_size), dtype=np.float32)
    uniform = rng.random((AGREEMENT_STEPS, AGREEMENT_BATCH))
    chars, _, _ = ref_cell.steps(prev, ref_cell.initial_state(AGREEMENT_BATCH), eps, uniform, 1.0)
    inputs = np.concatenate([prev[:, None], chars[:-1].T], axis=1)  # [B, T]: each step's previous character
    return compare_cells(ref_cell, cand_cell, inputs, eps)
