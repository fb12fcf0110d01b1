"""Training settings and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import check_float, check_seed

# The values a string setting may take (the first is the command line's choice list order).
CHOICES: dict[str, tuple[str, ...]] = {
    "lr_schedule": ("constant", "cosine"),
    "dropout_scope": ("decoder-input", "state"),
    "select_on": ("val", "val-first-half"),
    "select_by": ("elbo", "iwae"),
}
MAX_SELECT_SAMPLES = 64
# A validation subset (data.validation_subset) is this many stretches spread over the split.  Each scores one
# character at least, so --val-chars (0 aside) must be at least this many to keep its promise of "at most N".
VALIDATION_PIECES = 16
MIN_VAL_CHARS = VALIDATION_PIECES


@dataclass
class TrainConfig:
    """Everything about a run except the model's sizes (which are a ModelConfig)."""

    steps: int = 5000  # optimizer steps in total (a resumed run continues up to this)
    # A wall-clock budget (vrnn.training.budget): > 0 fits `steps` (and eval_every unless given) to this many
    # minutes from the command's start, early in the run; the checkpoint then records the fitted steps.
    minutes: float = 0.0
    batch_size: int = 32
    seq_len: int = 128  # predicted characters per window (plus one context character)
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # "constant" or "cosine" (linear warm-up, cosine decay to lr * min_lr_ratio)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    clip: float = 1.0  # gradient-norm clipping before each step; 0 disables
    # KL weight rises linearly from 0 to 1 over these steps (at most steps // 2).  Short by default:
    # while the weight is below 1 the encoder copies characters into z and the -ELBO is poor.
    kl_anneal_steps: int = 100
    free_bits: float = 0.0  # nats per latent dimension below which KL is not penalised; 0 disables
    aux_weight: float = 0.0  # weight of the smoothing posterior's auxiliary cost (Z-forcing); 0 disables
    dropout: float = 0.0  # dropout on what the decoder reads (training only; the cell is unchanged)
    # What --dropout masks: "decoder-input", the decoder's whole input [phi_z(z_t), h_{t-1}], so that no path
    # from the state to the prediction escapes it (z_t is computed from the undropped state); or "state", h_{t-1}
    # alone, which leaves the latent path unregularised (checkpoint format 1 knew only this one).
    dropout_scope: str = "decoder-input"
    weight_decay: float = 0.0  # decoupled (AdamW) decay of the weight matrices and embedding; 0 = plain Adam
    eval_every: int = 250
    # Validation characters scored at each evaluation (at most; all of a shorter split), in stretches spread
    # evenly over the split (data.validation_subset): a validation costs the same on any corpus.  0 = all.
    val_chars: int = 1_000_000
    # Which checkpoint OUT.best.pt keeps: the best validation score on `select_on` ("val", the whole split, or
    # "val-first-half", which leaves the second half unseen for reporting), by `select_by` ("elbo", or
    # "iwae": the importance-weighted bound with select_samples trajectories per window, which does not
    # favour a posterior that collapses onto the prior the way the ELBO does).
    select_on: str = "val"
    select_by: str = "elbo"
    select_samples: int = 8
    seed: int = 1337
    preset: str = "default"  # the preset the run started from (recorded so that --resume can hold it fixed)

    def validate(self) -> TrainConfig:
        """Refuse values that cannot train, naming the option."""
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "eval_every": self.eval_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        check_float(self.lr, "--lr", 0.0, 10.0, low_open=True)
        check_float(self.minutes, "--minutes", 0.0, 1e6)
        check_float(self.clip, "--clip", 0.0, 1e6)
        check_float(self.free_bits, "--free-bits", 0.0, 100.0)
        check_float(self.aux_weight, "--aux-weight", 0.0, 1000.0)
        check_float(self.weight_decay, "--weight-decay", 0.0, 100.0)
        check_float(self.min_lr_ratio, "min_lr_ratio", 0.0, 1.0)
        for name in ("kl_anneal_steps", "warmup_steps", "val_chars"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if 0 < self.val_chars < MIN_VAL_CHARS:
            raise UsageError(
                f"--val-chars must be 0 (the whole split) or at least {MIN_VAL_CHARS} (one character in each of its "
                f"{MIN_VAL_CHARS} stretches), got {self.val_chars}"
            )
        check_float(self.dropout, "--dropout", 0.0, 1.0, high_open=True)
        check_seed(self.seed)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                options = " or ".join(repr(a) for a in allowed)
                raise UsageError(f"--{name.replace('_', '-')} must be {options}, got {getattr(self, name)!r}")
        if not 1 <= self.select_samples <= MAX_SELECT_SAMPLES:
            raise UsageError(f"--select-samples must be from 1 to {MAX_SELECT_SAMPLES}, got {self.select_samples}")
        return self

    @property
    def select_metric(self) -> str:
        """The metrics row key that chooses OUT.best.pt (lower is better)."""
        return f"val_{self.select_by}_nats"

    @property
    def effective_kl_anneal_steps(self) -> int:
        """Annealing never outlasts half the run: with beta < 1 at the end, the encoder would
        still be copying characters into z cheaply and the validation -ELBO would be poor."""
        return min(self.kl_anneal_steps, self.steps // 2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild settings saved in a checkpoint (unknown keys ignored, missing ones at today's defaults),
        refusing a value of the wrong type in one line."""
        fields = {f.name: type(f.default) for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in fields}
        for name, value in kept.items():
            kind = fields[name]
            if not _has_type(value, kind):
                raise VrnnError(f"checkpoint train_config: {name} must be {kind.__name__}, got {value!r}")
        return cls(**kept)


def _has_type(value: object, kind: type) -> bool:
    """isinstance, except that a bool is no number and an int is also a float."""
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


# name -> (model sizes, training settings).  "writeup" reproduces the original blog
# post: 64 units everywhere, one GRU layer, batch 64, sequence 300, Adam 1e-3, 2000 steps,
# no schedule, no KL annealing.
PRESETS: dict[str, tuple[dict[str, int], dict[str, Any]]] = {
    "default": (
        {"embed_size": 64, "hidden_size": 512, "latent_size": 32, "layers": 1},
        {},
    ),
    "writeup": (
        {"embed_size": 64, "hidden_size": 64, "latent_size": 64, "layers": 1},
        {
            "steps": 2000,
            "batch_size": 64,
            "seq_len": 300,
            "lr": 1e-3,
            "lr_schedule": "constant",
            "warmup_steps": 0,
            "clip": 0.0,
            "kl_anneal_steps": 0,
            "free_bits": 0.0,
            "eval_every": 200,
        },
    ),
    # The bundled model: Tiny Shakespeare on 2 CPU cores in under an hour (18M characters, about 18
    # passes).  The model over-fits 1M characters within a few passes: dropout on the decoder's view of
    # the state, weight decay and a cosine schedule hold it off, and the best validation checkpoint is kept.
    # How the values were found: docs/results.md.
    "shakespeare": (
        {"embed_size": 64, "hidden_size": 512, "latent_size": 32, "layers": 1},
        {
            "steps": 2250,
            "batch_size": 32,
            "seq_len": 256,
            "lr": 2e-3,
            "dropout": 0.4,
            "weight_decay": 0.1,
            "kl_anneal_steps": 400,
            "eval_every": 125,
        },
    ),
    "tiny": (  # seconds on a laptop: smoke tests and demos
        {"embed_size": 16, "hidden_size": 32, "latent_size": 8, "layers": 1},
        {"steps": 200, "batch_size": 16, "seq_len": 32, "warmup_steps": 10, "kl_anneal_steps": 50, "eval_every": 50},
    ),
}
