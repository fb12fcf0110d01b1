"""The loss plot redrawn at each validation (optional: needs matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vrnn.runtime.atomic import atomic_write


def matplotlib_available() -> bool:
    """True when matplotlib can be imported (it is the optional `plot` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def load_pyplot() -> None:
    """Import pyplot for Agg now (a second or more): a budget run does it before it times a validation, whose
    plot would otherwise carry the import's cost into the cost of every later one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def draw_curves(history: list[dict[str, Any]], path: str | os.PathLike[str], title: str) -> None:
    """Plot training and validation NLL and KL (nats/char) against step into a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in history]
    fig, (ax_nll, ax_kl) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ax_nll.plot(steps, [m["train_nll"] for m in history], label="train NLL")
    ax_nll.plot(steps, [m["val_nll"] for m in history], label="val NLL")
    ax_nll.plot(steps, [m["val_elbo_nats"] for m in history], label="val -ELBO", linestyle="--")
    ax_nll.set_ylabel("nats / char")
    ax_kl.plot(steps, [m["train_kl"] for m in history], label="train KL")
    ax_kl.plot(steps, [m["val_kl"] for m in history], label="val KL")
    ax_kl.set_ylabel("nats / char")
    for ax in (ax_nll, ax_kl):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def _visible(char: str) -> str:
    return {"\n": "↵", " ": "␣", "\t": "⇥"}.get(char, char)


def draw_passage(
    passage: str, nll: Sequence[float], kl: Sequence[float], path: str | os.PathLike[str], title: str
) -> None:
    """Bar charts of each character's NLL and KL (nats) under the passage, into a PNG, atomically.

    High KL marks the characters where the latent carries information the state
    alone does not; near-zero KL, where the model runs on its recurrence.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = range(len(passage))
    width = max(8.0, 0.14 * len(passage))
    fig, (ax_nll, ax_kl) = plt.subplots(2, 1, figsize=(width, 4.5), sharex=True, constrained_layout=True)
    ax_nll.bar(positions, nll, color="tab:blue", width=0.85)
    ax_nll.set_ylabel("NLL (nats)")
    ax_kl.bar(positions, kl, color="tab:orange", width=0.85)
    ax_kl.set_ylabel("KL (nats)")
    ax_kl.set_xticks(list(positions))
    ax_kl.set_xticklabels([_visible(c) for c in passage], fontsize=8, fontfamily="monospace")
    ax_kl.set_xlim(-0.6, len(passage) - 0.4)
    for ax in (ax_nll, ax_kl):
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
