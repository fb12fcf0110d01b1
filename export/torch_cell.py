"""The PyTorch model behind the same numpy interface as the ONNX cell.

`vrnn-sample` and the parity tests drive it with the runtime's own generation
loop and its numpy reference for N steps per call (`run_steps`), so the two paths
share every line except the step itself and the in-graph choice of the character.
`torch_sampler(ckpt)` is the PyTorch counterpart of `Sampler.from_onnx(cell)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vrnn.models.checkpoint import load_checkpoint, model_from_checkpoint
from vrnn.runtime import schema
from vrnn.runtime.choice import RowOptions
from vrnn.runtime.loop import run_steps
from vrnn.runtime.sampler import Sampler


def torch_sampler(checkpoint: str, threads: int = 1) -> Sampler:
    """A Sampler over the PyTorch model of a checkpoint: the same methods, and for the same seed the same
    text, as `Sampler.from_onnx` on the cell exported from it.  Sets torch's thread count to `threads`."""
    torch.set_num_threads(threads)
    return Sampler(TorchCell(load_checkpoint(checkpoint)))


class TorchCell:
    """`VRNN.step` with numpy inputs and outputs (CPU, float32, no autograd)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.model, self.vocab = model_from_checkpoint(payload)
        self.config: schema.ModelConfig = self.model.config
        self.start_char: str = payload["start_char"]  # a character of the vocabulary (check_fields)
        self.chooses_per_row = True  # run_steps applies every row's options, as a schema-3 cell does

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        """Zero state, as the ONNX cell's."""
        return {k: np.zeros(s, np.float32) for k, s in self.config.initial_state_shapes(batch).items()}

    @torch.inference_mode()
    def step(
        self, prev_char: np.ndarray, state: dict[str, np.ndarray], eps: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One `VRNN.step` (prev_char [B], state, eps [B, Z]) -> (logits [B, V], state)."""
        logits, h, phi_z = self.model.step(
            torch.from_numpy(np.ascontiguousarray(prev_char, np.int64)),
            torch.from_numpy(state[schema.INPUT_H]),
            torch.from_numpy(state[schema.INPUT_PHI_Z]),
            torch.from_numpy(np.ascontiguousarray(eps, np.float32)),
        )
        return logits.numpy(), {schema.INPUT_H: h.numpy(), schema.INPUT_PHI_Z: phi_z.numpy()}

    def steps(
        self,
        prev_char: np.ndarray,
        state: dict[str, np.ndarray],
        eps: np.ndarray,
        uniform: np.ndarray,
        rows: RowOptions | float,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """len(eps) steps with the numpy sampler, each row with its own options: a schema-3 cell's contract."""
        return run_steps(self.step, prev_char, state, eps, uniform, rows)
