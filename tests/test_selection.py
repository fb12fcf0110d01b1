"""What the latent study needs of the trainer: dropout over the decoder's whole input, checkpoint selection on the
first half of the validation split by an importance-weighted bound, and reporting on the second half."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT

from vrnn.models.bundled import BUNDLED_CHECKPOINT
from vrnn.models.checkpoint import load_checkpoint
from vrnn.models.vrnn import VRNN
from vrnn.runtime.errors import UsageError
from vrnn.runtime.schema import ModelConfig
from vrnn.runtime.score_cli import text_to_score
from vrnn.runtime.splits import SPLITS, split_bounds
from vrnn.training.cli import main as train_main
from vrnn.training.config import TrainConfig
from vrnn.training.data import Corpus
from vrnn.training.eval_cli import windowed_pieces


@pytest.mark.parametrize("count", [2, 3, 10, 11, 1000, 111_540 * 10])
def test_the_parts_of_a_text_partition_it(count: int) -> None:
    bounds = {split: split_bounds(count, split) for split in SPLITS}
    assert bounds["all"] == (0, count)
    assert bounds["train"][1] == bounds["val"][0] == bounds["val-first-half"][0]
    assert bounds["val-first-half"][1] == bounds["val-second-half"][0]
    assert bounds["val-second-half"][1] == bounds["val"][1] == count
    first, second = (b - a for a, b in (bounds["val-first-half"], bounds["val-second-half"]))
    assert 0 <= second - first <= 1


def test_every_command_cuts_the_second_half_the_same_way() -> None:
    text = TINY_TEXT * 5
    start, end = split_bounds(len(text), "val-second-half")
    context, scored = text_to_score(text, "val-second-half", "\n")
    assert (context, scored) == (text[start - 1], text[start:end])
    ids = torch.arange(len(text)).numpy()
    (piece,) = windowed_pieces(ids, "val-second-half", 0, 64)
    assert piece[0] == start - 1 and piece[-1] == end - 1
    corpus = Corpus.from_text(text, "t", "")
    first = corpus.validation_part("val-first-half")
    assert len(first) + len(corpus.validation_part("val-second-half")) == len(corpus.val)


def test_decoder_input_dropout_masks_the_latent_path_and_state_dropout_does_not() -> None:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=11, embed_size=6, hidden_size=8, latent_size=3)
    model = VRNN(config).double()
    tokens = torch.randint(0, 11, (2, 7))
    eps = torch.randn(6, 2, 3, dtype=torch.float64)
    plain = model(tokens, eps).nll
    keep_state = torch.ones(6, 2, 8, dtype=torch.float64)
    assert torch.allclose(model(tokens, eps, keep_state).nll, plain)  # the state alone, all kept: unchanged
    drop_latent = torch.cat([keep_state, torch.zeros(6, 2, 6, dtype=torch.float64)], -1)  # [h, phi_z]: phi_z off
    dropped = model(tokens, eps, drop_latent).nll
    assert not torch.allclose(dropped, plain)
    # the decoder then sees nothing of z_t itself: other noise gives the same first prediction (later ones
    # differ, through the recurrence, which dropout never touches)
    other = model(tokens, torch.randn_like(eps), drop_latent).nll
    assert torch.allclose(other[:, 0], dropped[:, 0]) and not torch.allclose(other, dropped)


def test_selection_by_iwae_on_the_first_half_keeps_the_best_and_resumes(tmp_path: Path, tiny_corpus: Path) -> None:
    ckpt = tmp_path / "run.pt"
    args = [str(tiny_corpus), "-o", str(ckpt), "--preset", "tiny", "--seq-len", "16", "--eval-every", "10",
            "--select-on", "val-first-half", "--select-by", "iwae", "--select-samples", "4", "--quiet",
            "--threads", "1"]  # fmt: skip
    train_main([*args, "--steps", "20"], standalone_mode=False)
    payload = load_checkpoint(ckpt)
    history = payload["metrics"]["history"]
    assert all("val_iwae_nats" in row for row in history)
    best = min(row["val_iwae_nats"] for row in history)
    assert payload["metrics"]["best_val_iwae_nats"] == best
    assert payload["train_config"]["dropout_scope"] == "decoder-input"
    train_main([*args, "--steps", "30", "--resume"], standalone_mode=False)
    resumed = load_checkpoint(ckpt)["metrics"]
    assert resumed["best_val_iwae_nats"] == min(row["val_iwae_nats"] for row in resumed["history"])
    chosen = load_checkpoint(tmp_path / "run.best.pt")
    assert chosen["step"] == min(resumed["history"], key=lambda row: row["val_iwae_nats"])["step"]


def test_a_format_1_checkpoint_was_trained_with_state_dropout() -> None:
    payload = load_checkpoint(BUNDLED_CHECKPOINT)
    assert payload["train_config"]["dropout_scope"] == "state"
    assert TrainConfig.from_dict(payload["train_config"]).dropout_scope == "state"


@pytest.mark.parametrize(
    ("option", "value"), [("select_samples", 0), ("select_by", "nll"), ("select_on", "val-second-half")]
)
def test_selection_settings_that_cannot_work_are_refused(option: str, value: object) -> None:
    with pytest.raises(UsageError, match=f"--{option.replace('_', '-')}"):
        TrainConfig(**{option: value}).validate()
