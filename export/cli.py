"""`vrnn-export CKPT CELL`: write the generation cell as one self-describing ONNX file."""

from __future__ import annotations

import click

from vrnn import __version__
from vrnn.export.opsets import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from vrnn.export.thresholds import (
    AGREEMENT_BATCH,
    AGREEMENT_STEPS,
    MAX_MEAN_KL,
    TOLERANCE,
    VERIFY_BATCHES,
    VERIFY_STEPS,
)
from vrnn.runtime.atomic import atomic_write, check_writable_destination, refuse_overwriting_inputs
from vrnn.runtime.commands import OneLineCommand, cli_errors, require_extra
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import check_float
from vrnn.runtime.schema import OUTPUT_CHARS as CHARS
from vrnn.runtime.schema import WEIGHT_FORMATS


def export_cell(
    checkpoint: str,
    out: str,
    opset: int = DEFAULT_OPSET,
    echo=None,
    weights: str = "float32",
    max_kl: float | None = None,
) -> dict[int, dict[str, float]]:
    """Export, verify against PyTorch at batch 1 and 7, then write `out` atomically; return the differences.

    With `weights` float16 or int8 the float32 cell is verified as always, and the cell written is checked
    against it (verify.lossy_agreement): refused if the mean KL exceeds `max_kl` (default MAX_MEAN_KL)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset must be from {MIN_OPSET} to {MAX_OPSET}, got {opset}")
    if weights not in WEIGHT_FORMATS:
        raise UsageError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    if max_kl is not None:
        if weights == "float32":  # only a float16 or int8 cell is compared with the float32 one
            raise UsageError(
                "--max-kl bounds a float16 or int8 cell's departure from float32: it needs --weights float16 or int8"
            )
        check_float(max_kl, "--max-kl", low=0.0, high=1e6, low_open=True)
    check_writable_destination(out)
    refuse_overwriting_inputs({"CELL": out}, {"CHECKPOINT": checkpoint})
    require_extra("vrnn-export", "torch", "onnx")
    from vrnn.export.onnx_cell import build_cell  # PyTorch and onnx from here on
    from vrnn.export.torch_cell import TorchCell
    from vrnn.export.verify import edge_disagreements, lossy_agreement, max_differences
    from vrnn.models.checkpoint import file_sha256, load_checkpoint

    payload = load_checkpoint(checkpoint)
    cell = TorchCell(payload)
    metrics = payload.get("metrics") or {}
    source = {
        "checkpoint_sha256": file_sha256(checkpoint),
        "step": int(payload["step"]),
        "val_elbo_nats": metrics.get("val_elbo_nats"),
        "val_bpc": metrics.get("val_bpc"),
        "corpus": payload.get("corpus", {}),
        "opset": opset,
        "posterior": cell.model.config.posterior,  # how it was trained; the cell itself is the same for every one
    }
    proto = build_cell(cell.model, cell.vocab, cell.start_char, source, opset)  # float32: checked against PyTorch
    data = proto.SerializeToString()
    report = max_differences(data, cell)
    for batch, diffs in report.items():
        floats = {name: value for name, value in diffs.items() if name != CHARS}
        line = ", ".join(f"{name} {value:.2e}" for name, value in floats.items())
        if echo:
            echo(f"parity at batch {batch}: max |onnxruntime - torch|: {line}; picks differing: {diffs[CHARS]:.0f}")
    worst = max(v for diffs in report.values() for name, v in diffs.items() if name != CHARS)
    if not worst <= TOLERANCE:
        raise VrnnError(f"exported cell differs from PyTorch by {worst:.2e} > tolerance {TOLERANCE:.0e}; not written")
    wrong = sum(diffs[CHARS] for diffs in report.values())
    if wrong:
        raise VrnnError(f"exported cell picked {wrong:.0f} characters unlike the numpy sampler; not written")
    edges = edge_disagreements(cell.config.vocab_size, opset)
    if edges:
        raise VrnnError(f"the cell's sampling picked unlike the numpy sampler in {edges} edge cases; not written")
    if echo:
        echo("sampling on edge cases (ties, k = 1 and V, top-p at a boundary, u = 0 and just below 1): as numpy")
    if weights != "float32":
        reference = data
        data = build_cell(cell.model, cell.vocab, cell.start_char, source, opset, weights).SerializeToString()
        agreement = lossy_agreement(reference, data)
        bound = MAX_MEAN_KL[weights] if max_kl is None else max_kl
        if echo:
            echo(
                f"{weights} against float32 along {agreement.steps} characters: mean KL {agreement.mean_kl:.2e} "
                f"nats (max {agreement.max_kl:.2e}), max |logits diff| {agreement.max_logit_diff:.2e}, "
                f"most likely character the same at {agreement.argmax_agreement:.1%} of steps; "
                f"{len(data) / 1e6:.2f} MB against {len(reference) / 1e6:.2f} MB"
            )
        if not agreement.mean_kl <= bound:
            raise VrnnError(
                f"the {weights} cell departs from the float32 cell by a mean KL of {agreement.mean_kl:.2e} nats "
                f"per character > tolerance {bound:.0e}; not written"
            )
    with atomic_write(out) as handle:
        handle.write(data)
    return report


EXPORT_HELP = f"""Write CELL, the generation cell of CHECKPOINT, as one ONNX file.

Before writing, the float32 cell is run in onnxruntime for {VERIFY_STEPS} steps on random
inputs at batch {" and ".join(map(str, VERIFY_BATCHES))} and compared with the PyTorch step and the numpy
sampler; the export fails if any output differs by more than {TOLERANCE:g} or any pick
differs.  A float16 or int8 cell is then compared with the float32 one along
{AGREEMENT_BATCH * AGREEMENT_STEPS:,} characters of text on the same noise (the mean KL divergence of their
next-character distributions) and refused above --max-kl."""


@click.command(
    cls=OneLineCommand,
    needs=("torch", "onnx"),
    help=EXPORT_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("checkpoint", type=click.Path(readable=False))
@click.argument("cell", type=click.Path(readable=False))
@click.option(
    "--opset",
    type=int,
    default=DEFAULT_OPSET,
    show_default=True,
    help=f"ONNX opset of the graph, from {MIN_OPSET} to {MAX_OPSET}.",
)
@click.option(
    "--weights",
    type=click.Choice(WEIGHT_FORMATS),
    default="float32",
    show_default=True,
    help="How the file stores the weight matrices: float16 halves it, int8 (per-column scales) quarters it.",
)
@click.option(
    "--max-kl",
    type=float,
    default=None,
    help="float16/int8: refuse the cell if its mean KL from the float32 cell exceeds this (nats/char). "
    f"[default: {MAX_MEAN_KL['float16']:g} for float16, {MAX_MEAN_KL['int8']:g} for int8]",
)
@cli_errors
def main(checkpoint: str, cell: str, opset: int, weights: str, max_kl: float | None) -> None:
    """Write CELL, the generation cell of CHECKPOINT, as one ONNX file (the help text is EXPORT_HELP)."""
    export_cell(checkpoint, cell, opset, echo=lambda m: click.echo(m, err=True), weights=weights, max_kl=max_kl)
    click.echo(f"wrote {cell}", err=True)


if __name__ == "__main__":
    main()
