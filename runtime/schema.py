"""The contract shared by the PyTorch side and the torch-free runtime.

Everything both sides must agree on lives here: model sizes, format names and
versions, the ONNX cell's input/output names and its metadata keys. This module
imports only the standard library so that the runtime stays torch-free and the
torch side can import it without pulling anything heavy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vrnn.runtime.errors import VrnnError

# --- The exported generation cell -------------------------------------------
CELL_FORMAT = "vrnn-cell"
# 3: each row's own temperature, top-k and top-p, applied in-graph (so any mix of options runs N steps a call).
# 2: one temperature for the batch; top-k, top-p and greedy chosen on the host from one step's logits.  Read
#    still, with the host-side path.  1 was one character per run(): refused.
CELL_SCHEMA_VERSION = 3
OLDEST_SCHEMA_VERSION = 2

# Inputs, in order.  One InferenceSession.run takes N steps: each step consumes the
# previous character, draws the latent from the prior with this step's `eps`, and
# picks the next character by inverse-CDF sampling of softmax(logits / temperature)
# with this step's `uniform` number.  Only noise enters the graph, so the same noise
# gives the same characters as the numpy reference (vrnn.runtime.loop.run_steps).
INPUT_PREV_CHAR = "prev_char"  # int64 [B]: the character before the first one to predict
INPUT_H = "h"  # float32 [L, B, H]: GRU state after consuming all characters before prev_char
INPUT_PHI_Z = "phi_z"  # float32 [B, E]: phi_z(z) of the latent drawn at the previous step
INPUT_EPS = "eps"  # float32 [N, B, Z]: standard normal noise, one row per step
INPUT_UNIFORM = "uniform"  # float64 [N, B]: uniform numbers in [0, 1) that pick each character
INPUT_TEMPERATURE = "temperature"  # float64 [B] (schema 2: []): each row's logits are divided by it
INPUT_TOP_K = "top_k"  # int64 [B]: each row keeps its k most likely characters; 0: no top-k (schema 3)
INPUT_TOP_P = "top_p"  # float64 [B]: each row keeps its nucleus of mass p; 1: no top-p (schema 3)

OUTPUT_CHARS = "chars"  # int64 [N, B]: the character picked at each step (fed to the next step)
OUTPUT_LOGITS = "logits"  # float32 [N, B, V]: each step's unnormalised log-probabilities
OUTPUT_H = "h_out"  # float32 [L, B, H]: state after the last step; feed back as `h`
OUTPUT_PHI_Z = "phi_z_out"  # float32 [B, E]: feed back as `phi_z`

# The operators a cell may use: those vrnn-export writes.  None of them makes a tensor larger than its inputs
# and the file allow (as ConstantOfShape, Expand, Tile, Range, Reshape or Loop can; NonZero's output is at most
# its input), so what a cell allocates is bounded by its file and its inputs; a file that uses anything else is
# not a vrnn cell, whatever its metadata says.
CELL_OPERATORS = frozenset(
    {"Add", "Cast", "Concat", "CumSum", "Div", "Elu", "Exp", "Gather", "Gemm", "Identity", "Less", "LessOrEqual", "Min",
     "Mul", "ReduceMax", "ReduceSum", "Scan", "Sigmoid", "Slice", "Softplus", "Split", "Sub", "Tanh", "Unsqueeze",
     # schema 3: each row's top-k and top-p (TopK's k is the vocabulary's size, fixed in the file)
     "TopK", "Where", "Greater", "GreaterOrEqual", "Or", "GatherElements", "Squeeze", "If",
     "NonZero", "ScatterElements",  # the sorted rows: at most the batch, so still bounded by the inputs
     # int8 cells (WEIGHT_FORMATS): the state's products in integer arithmetic
     "QuantizeLinear", "MatMulInteger"}
)  # fmt: skip

# How a cell stores its weight matrices (metadata META_WEIGHTS; absent = float32).  The interface is the same
# for all three: the arithmetic between the weights and the outputs is float32, sampling float64.
#   float32: as trained.   float16: matrices stored as float16, cast to float32 once when the session loads.
#   int8: matrices quantized to 8 bits with one float32 scale per output column (symmetric); the products of
#         the GRU state run in integer arithmetic (the state, always inside (-1, 1), quantized with scale 1/127;
#         those weights stored as uint8 with zero point 128, which onnxruntime computes exactly on every CPU).
WEIGHT_FORMATS = ("float32", "float16", "int8")


@dataclass(frozen=True)
class Port:
    """One input or output of the cell: its name, element type and shape.  Shape entries are "batch" and
    "steps" (the sizes a call chooses) or names of ModelConfig fields (fixed by the model)."""

    name: str
    dtype: str  # "int64", "float32" or "float64"
    shape: tuple[str, ...]

    def dims(self, config: ModelConfig, batch: int | str | None = "batch", steps: int | str | None = "steps"):
        """The shape for `config`, with `batch` and `steps` standing for the call's sizes."""
        sizes = {"batch": batch, "steps": steps}
        return tuple(sizes[d] if d in sizes else getattr(config, d) for d in self.shape)


# The cell's signature, in order: the one declaration the exporter, the metadata and every loader read.
_STATE_AND_NOISE = (
    Port(INPUT_PREV_CHAR, "int64", ("batch",)),
    Port(INPUT_H, "float32", ("layers", "batch", "hidden_size")),
    Port(INPUT_PHI_Z, "float32", ("batch", "embed_size")),
    Port(INPUT_EPS, "float32", ("steps", "batch", "latent_size")),
    Port(INPUT_UNIFORM, "float64", ("steps", "batch")),
)
CELL_INPUTS = (
    *_STATE_AND_NOISE,
    Port(INPUT_TEMPERATURE, "float64", ("batch",)),
    Port(INPUT_TOP_K, "int64", ("batch",)),
    Port(INPUT_TOP_P, "float64", ("batch",)),
)
CELL_INPUTS_V2 = (*_STATE_AND_NOISE, Port(INPUT_TEMPERATURE, "float64", ()))
CELL_OUTPUTS = (
    Port(OUTPUT_CHARS, "int64", ("steps", "batch")),
    Port(OUTPUT_LOGITS, "float32", ("steps", "batch", "vocab_size")),
    Port(OUTPUT_H, "float32", ("layers", "batch", "hidden_size")),
    Port(OUTPUT_PHI_Z, "float32", ("batch", "embed_size")),
)
INPUT_NAMES = tuple(p.name for p in CELL_INPUTS)


def cell_inputs(version: int) -> tuple[Port, ...]:
    """The inputs of a cell of schema `version` (OLDEST_SCHEMA_VERSION to CELL_SCHEMA_VERSION)."""
    return CELL_INPUTS_V2 if version == 2 else CELL_INPUTS


OUTPUT_NAMES = tuple(p.name for p in CELL_OUTPUTS)

# (input, output) pairs that carry the recurrent state from one call to the next.
STATE_PAIRS = ((INPUT_H, OUTPUT_H), (INPUT_PHI_Z, OUTPUT_PHI_Z))

# The character that serves as context before any text (and before a prime).
DEFAULT_START_CHAR = "\n"

# vrnn-train validates on the last 10% of the corpus (as nanoGPT's shakespeare_char); vrnn-eval and
# vrnn-score take --split val to mean the same characters.
VALIDATION_FRACTION = 0.1

# metadata_props keys of the ONNX cell.  Values are strings; structured values are JSON.
META_FORMAT = "vrnn.format"
META_SCHEMA_VERSION = "vrnn.schema_version"
META_VOCAB = "vrnn.vocab"  # JSON array of one-character strings, index = token id
META_START_CHAR = "vrnn.start_char"  # the context character for unprimed text
META_CONFIG = "vrnn.config"  # JSON object: ModelConfig fields
META_INTERFACE = "vrnn.interface"  # JSON object: inputs, outputs, state pairs, initial state
META_SOURCE = "vrnn.source"  # JSON object: checkpoint sha256, training step, validation score
META_WEIGHTS = "vrnn.weights"  # one of WEIGHT_FORMATS; optional: absent means float32
REQUIRED_META_KEYS = (
    META_FORMAT,
    META_SCHEMA_VERSION,
    META_VOCAB,
    META_START_CHAR,
    META_CONFIG,
    META_INTERFACE,
)

# Upper bounds of a model's sizes: far beyond anything that trains on one machine, and small enough that no
# cell or checkpoint can make a loader allocate absurd state from its metadata alone.
MAX_SIZES = {
    "vocab_size": 1 << 21,
    "embed_size": 1 << 16,
    "hidden_size": 1 << 16,
    "latent_size": 1 << 16,
    "layers": 64,
    "backward_size": 1 << 16,
}

# ModelConfig fields that shape only the training model (the encoder): not part of the cell's metadata.
TRAINING_ONLY_FIELDS = ("posterior", "backward_size")
# The encoder families (ModelConfig.posterior); checkpoints without the field are "filtering".
POSTERIORS = ("filtering", "smoothing")

# Standard deviations are softplus(x) + SIGMA_FLOOR: never zero, never overflowing.
SIGMA_FLOOR = 1e-3


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a VRNN: the contract between trainer, exporter and runtime."""

    vocab_size: int
    embed_size: int = 64  # width of phi_x(x) and of phi_z(z)
    hidden_size: int = 64  # GRU state width per layer
    latent_size: int = 64  # dimensions of z; 0 removes the latent (a plain GRU language model, the baseline)
    layers: int = 1  # stacked GRU layers; prior, encoder and decoder read the top one
    # Training only (the generation cell never sees the encoder): "filtering" q(z_t | x_t, h_{t-1}) or
    # "smoothing" q(z_t | b_t, h_{t-1}) with b_t a backward GRU's summary of x_t..x_T.
    posterior: str = "filtering"
    backward_size: int = 0  # the smoothing posterior's backward GRU width; 0 = hidden_size

    def __post_init__(self) -> None:
        if self.posterior not in POSTERIORS:
            raise VrnnError(f"model config: posterior must be one of {', '.join(POSTERIORS)}, got {self.posterior!r}")
        if self.posterior != "filtering" and self.latent_size == 0:
            raise VrnnError(f"model config: a {self.posterior} posterior needs a latent (latent_size > 0)")
        for field in dataclasses.fields(self):
            if field.name == "posterior":
                continue
            value = getattr(self, field.name)
            low = 0 if field.name in ("latent_size", "backward_size") else 1
            high = MAX_SIZES[field.name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise VrnnError(f"model config: {field.name} must be an integer from {low} to {high}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, as stored in checkpoints."""
        return dataclasses.asdict(self)

    def cell_dict(self) -> dict[str, int]:
        """The sizes the generation cell depends on, as stored in its metadata (the posterior is not one)."""
        return {k: v for k, v in self.to_dict().items() if k not in TRAINING_ONLY_FIELDS}

    @property
    def backward_width(self) -> int:
        """The smoothing posterior's backward GRU width (backward_size, or hidden_size when 0)."""
        return self.backward_size or self.hidden_size

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Rebuild a config from `to_dict` output, refusing unknown or missing fields."""
        if not isinstance(data, dict):
            raise VrnnError("model config: expected a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise VrnnError(f"model config: unknown fields {sorted(unknown)}")
        if "vocab_size" not in data:
            raise VrnnError("model config: vocab_size is missing")
        return cls(**data)

    def initial_state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the zero-initialised state inputs of the cell for a batch."""
        return {
            INPUT_H: (self.layers, batch, self.hidden_size),
            INPUT_PHI_Z: (batch, self.embed_size),
        }
