"""Check an exported cell against the PyTorch step on the same random inputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from vrnn.export.torch_cell import TorchCell
from vrnn.runtime import schema
from vrnn.runtime.cell import session_options

# Maximum absolute difference allowed between onnxruntime and PyTorch on any output.
# Both compute in float32 but in different orders (folded phi_x table, fused Gemms,
# onnxruntime's GRU kernel), so results differ by a few float32 ulps of the largest
# intermediate values; 1e-5 is optimum's bar and holds with margin for trained models.
TOLERANCE = 1e-5


def random_step_inputs(config: schema.ModelConfig, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible cell inputs: states in the ranges the model produces, standard normal noise."""
    return {
        schema.INPUT_PREV_CHAR: rng.integers(0, config.vocab_size, batch, dtype=np.int64),
        schema.INPUT_H: rng.uniform(-1, 1, (config.layers, batch, config.hidden_size)).astype(np.float32),
        schema.INPUT_PHI_Z: (rng.standard_normal((batch, config.embed_size)) * 0.5).astype(np.float32),
        schema.INPUT_EPS: rng.standard_normal((batch, config.latent_size)).astype(np.float32),
    }


def max_differences(
    onnx_bytes: bytes, torch_cell: TorchCell, batches: tuple[int, ...] = (1, 7), seed: int = 0
) -> dict[int, dict[str, float]]:
    """Max |onnxruntime - torch| of every output, per batch size."""
    session = ort.InferenceSession(onnx_bytes, sess_options=session_options(1), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    report: dict[int, dict[str, float]] = {}
    for batch in batches:
        feed = random_step_inputs(torch_cell.config, batch, rng)
        got = session.run(None, feed)
        state = {schema.INPUT_H: feed[schema.INPUT_H], schema.INPUT_PHI_Z: feed[schema.INPUT_PHI_Z]}
        logits, new_state = torch_cell.step(feed[schema.INPUT_PREV_CHAR], state, feed[schema.INPUT_EPS])
        expected = [logits, new_state[schema.INPUT_H], new_state[schema.INPUT_PHI_Z]]
        report[batch] = {
            name: float(np.max(np.abs(a - b))) for name, a, b in zip(schema.OUTPUT_NAMES, got, expected, strict=True)
        }
    return report
