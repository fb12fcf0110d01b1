"""A corpus's ids for training in torch: the train/validation split as arrays, random windows, the validation
subset.  Which files a corpus is: vrnn.training.corpus; their token file: vrnn.training.tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vrnn.runtime.errors import VrnnError
from vrnn.runtime.splits import split_bounds, split_point
from vrnn.runtime.vocab import Vocabulary
from vrnn.training.config import VALIDATION_PIECES
from vrnn.training.tokens import TokenFile


@dataclass
class Corpus:
    """A text as token ids, with its vocabulary and the 90/10 train/validation split.

    The ids are numpy arrays: in memory (`from_text`), or a read-only memory map of a token file
    (`from_tokens`, vrnn.training.tokens), which windows are read from without loading the corpus."""

    vocab: Vocabulary
    train: np.ndarray  # [N_train] integer ids
    val: np.ndarray  # [N_val]
    sha256: str
    name: str

    @classmethod
    def from_text(cls, text: str, name: str, sha256: str, vocab: Vocabulary | None = None) -> Corpus:
        """Encode `text` in memory (with its own vocabulary unless one is given) and split it."""
        vocab = vocab or Vocabulary.from_text(text)
        ids = vocab.encode(text, what=f"corpus {name}")
        split = split_point(len(ids))
        return cls(vocab, ids[:split], ids[split:], sha256, name)

    @classmethod
    def from_tokens(cls, tokens: TokenFile, name: str) -> Corpus:
        """A prepared token file, read through its memory map."""
        return cls(tokens.vocab, tokens.train, tokens.val, tokens.sha256, name)

    def validation_part(self, part: str) -> np.ndarray:
        """The ids of `part` of the validation split: "val" (all of it) or one of its halves (runtime.splits)."""
        offset = len(self.train)
        start, end = split_bounds(offset + len(self.val), part)
        return self.val[start - offset : end - offset]

    def ids(self, array: np.ndarray) -> torch.Tensor:
        """Ids read from the corpus as an int64 tensor."""
        return torch.from_numpy(np.asarray(array, dtype=np.int64))

    def check_window(self, seq_len: int) -> None:
        """Refuse a corpus whose splits cannot hold one window of seq_len + 1 characters."""
        need = seq_len + 1
        if len(self.train) < need or len(self.val) < 2:
            total = len(self.train) + len(self.val)
            raise VrnnError(
                f"corpus {self.name} is too short: {total} characters, but one training window needs "
                f"{need} in the first 90% (use a smaller --seq-len or a longer text)"
            )


def sample_windows(corpus: Corpus, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """`batch` random windows of seq_len + 1 consecutive ids of the training split ([B, T+1], int64): a context
    character and T targets.  Only the windows are read (a memory-mapped corpus stays on disk)."""
    ids = corpus.train
    starts = torch.randint(0, len(ids) - seq_len, (batch,), generator=generator).numpy()
    return corpus.ids(check_ids(ids[starts[:, None] + np.arange(seq_len + 1)], len(corpus.vocab), corpus.name))


def check_ids(ids: np.ndarray, vocab_size: int, name: str) -> np.ndarray:
    """`ids`, refused in one line if one lies outside the vocabulary: the last guard against a token file
    damaged after its checks (tokens.py), so that damage never reaches the model as a wrong id."""
    if ids.size and int(ids.max()) >= vocab_size:
        raise VrnnError(
            f"the token file of {name} holds character id {int(ids.max())}, outside its vocabulary of {vocab_size}: "
            "it was damaged after it was built; delete it from the token cache to rebuild it"
        )
    return ids


def validation_subset(
    corpus: Corpus, val_chars: int, part: str = "val", pieces: int = VALIDATION_PIECES
) -> list[torch.Tensor]:
    """The validation split (or `part` of it, Corpus.validation_part), or, when it is longer than `val_chars`
    (> 0), `pieces` stretches of about val_chars / pieces characters spread evenly over it: the same ones at
    every validation, so a validation costs the same on any corpus.  Each stretch's first id is context (as
    in runtime.scoring.windows)."""
    val = corpus.validation_part(part)
    if not val_chars or len(val) <= val_chars + 1:
        return [corpus.ids(val)]
    length = max(2, val_chars // pieces + 1)
    starts = np.linspace(0, len(val) - length, pieces).astype(np.int64)
    return [corpus.ids(val[s : s + length]) for s in starts]
