"""The loss plot redrawn at each validation (optional: needs matplotlib)."""

from __future__ import annotations

import os
from typing import Any

from vrnn.runtime.atomic import atomic_write


def matplotlib_available() -> bool:
    """True when matplotlib can be imported (it is the optional `plot` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


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
