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
from vrnn.runtime.choice import choose_unfiltered
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
        schema.INPUT_TEMPERATURE: np.array(0.8),
    }


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
        temperature = float(feed[schema.INPUT_TEMPERATURE])
        state = {schema.INPUT_H: feed[schema.INPUT_H], schema.INPUT_PHI_Z: feed[schema.INPUT_PHI_Z]}
        prev, torch_logits, wrong_picks = feed[schema.INPUT_PREV_CHAR], [], 0
        for t in range(VERIFY_STEPS):
            step_logits, state = torch_cell.step(prev, state, feed[schema.INPUT_EPS][t])
            torch_logits.append(step_logits)
            expected = choose_unfiltered(logits[t], feed[schema.INPUT_UNIFORM][t], temperature)
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
