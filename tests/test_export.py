"""vrnn-export: a valid, small, self-describing ONNX cell that matches the PyTorch step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
import pytest
from conftest import bin_path

from vrnn.export.cli import export_cell
from vrnn.export.opsets import MAX_OPSET, MIN_OPSET
from vrnn.export.thresholds import TOLERANCE
from vrnn.export.torch_cell import TorchCell
from vrnn.export.verify import max_differences
from vrnn.models.checkpoint import file_sha256, load_checkpoint
from vrnn.runtime import Sampler, schema
from vrnn.runtime.schema import ModelConfig


def test_cell_passes_the_full_onnx_checker(trained: dict[str, Path]) -> None:
    model = onnx.load(str(trained["cell"]))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(schema.INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(schema.OUTPUT_NAMES)
    # One file: every weight is inside it.
    assert all(not t.external_data for t in model.graph.initializer)
    # Small graph: onnxruntime's per-node overhead dominates at batch 1.  Outside the Scan: each row's options
    # (15 nodes, once per call: which rows sort, and their top-k and top-p), the uniform noise as a column,
    # per layer a Gather of its state and the Gemm and Split of its first step's recurrent product, then the
    # state's layers unsqueezed and concatenated.
    # The Scan's body: the step's 10 nodes besides the GRU layers, 11 per layer (9 for the gates and update,
    # then the Gemm and Split of everything that reads the new state), 15 of unfiltered sampling, an If and
    # an Identity (the picked character is both carried and scanned out).  The If sorts (27 nodes of top-k
    # and top-p, docs/cell-spec.md 4.2, on those rows alone) only when some row has top-k or top-p; else it
    # passes the pick on.
    layers = json.loads({p.key: p.value for p in model.metadata_props}[schema.META_CONFIG])["layers"]
    assert layers == 2
    options = ["Unsqueeze", "Greater", "Where", "Unsqueeze", "Less", "Where", "Unsqueeze", "Or", "Cast", "ReduceMax",
               "Cast", "NonZero", "Squeeze", "Gather", "Gather"]  # fmt: skip
    outer = [*options, "Unsqueeze", *["Gather", "Gemm", "Split"] * layers, "Scan", *["Unsqueeze"] * layers, "Concat"]
    assert [n.op_type for n in model.graph.node] == outer
    body = model.graph.node[outer.index("Scan")].attribute[0].g
    assert len(body.node) == 10 + 11 * layers + 15 + 2, [n.op_type for n in body.node]
    (choice,) = [n for n in body.node if n.op_type == "If"]
    branches = {a.name: a.g for a in choice.attribute}
    assert len(branches["then_branch"].node) == 27 and len(branches["else_branch"].node) == 1
    assert "GRU" not in {n.op_type for n in body.node}
    # Pure function: no random operators.
    random_ops = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
    assert not {n.op_type for n in [*model.graph.node, *body.node, *branches["then_branch"].node]} & random_ops
    # Dynamic batch dimension on every input and output (each row's options included).
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert any(d.dim_param == "batch" for d in dims), value.name


def test_metadata_describes_the_cell(trained: dict[str, Path]) -> None:
    meta = {p.key: p.value for p in onnx.load(str(trained["cell"])).metadata_props}
    ckpt = load_checkpoint(trained["checkpoint"])
    assert meta[schema.META_FORMAT] == schema.CELL_FORMAT
    assert int(meta[schema.META_SCHEMA_VERSION]) == schema.CELL_SCHEMA_VERSION
    assert json.loads(meta[schema.META_VOCAB]) == ckpt["vocab"]
    assert meta[schema.META_START_CHAR] == "\n"
    assert json.loads(meta[schema.META_CONFIG]) == ModelConfig.from_dict(ckpt["model_config"]).cell_dict()
    interface = json.loads(meta[schema.META_INTERFACE])
    assert [i["name"] for i in interface["inputs"]] == list(schema.INPUT_NAMES)
    assert [o["name"] for o in interface["outputs"]] == list(schema.OUTPUT_NAMES)
    assert all(s["initial"] == "zeros" for s in interface["state"])
    source = json.loads(meta[schema.META_SOURCE])
    assert source["checkpoint_sha256"] == file_sha256(trained["checkpoint"])
    assert source["step"] == 300
    assert source["val_bpc"] == pytest.approx(ckpt["metrics"]["val_bpc"])


def test_parity_of_every_output_at_batch_1_and_7(trained: dict[str, Path]) -> None:
    """Parity test 1: over three steps, every float output of the ONNX cell within TOLERANCE (1e-5
    absolute) of VRNN.step, and every in-graph pick the numpy sampler's ("chars" counts differences)."""
    cell = TorchCell(load_checkpoint(trained["checkpoint"]))
    report = max_differences(trained["cell"].read_bytes(), cell, batches=(1, 7), seed=3)
    for batch, diffs in report.items():
        assert diffs.pop(schema.OUTPUT_CHARS) == 0, batch
        assert set(diffs) == {schema.OUTPUT_LOGITS, schema.OUTPUT_H, schema.OUTPUT_PHI_Z}
        for name, value in diffs.items():
            assert value <= TOLERANCE, (batch, name, value)


@pytest.mark.slow
def test_export_cli_reports_parity_and_writes_atomically(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cell.onnx"
    result = subprocess.run([bin_path("vrnn-export"), str(trained["checkpoint"]), str(out)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "batch 1" in result.stderr and "batch 7" in result.stderr and "logits" in result.stderr
    assert out.is_file() and not list(tmp_path.glob(".*.tmp"))
    bad = subprocess.run([bin_path("vrnn-export"), str(trained["checkpoint"]), str(tmp_path / "x.onnx"),
                          "--opset", "3"], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "--opset" in bad.stderr and not (tmp_path / "x.onnx").exists()
    notckpt = subprocess.run([bin_path("vrnn-export"), str(out), str(tmp_path / "y.onnx")],
                             capture_output=True, text=True)  # fmt: skip
    assert notckpt.returncode == 1 and "checkpoint" in notckpt.stderr and "Traceback" not in notckpt.stderr
    assert not (tmp_path / "y.onnx").exists()


@pytest.mark.parametrize("opset", [MIN_OPSET, 18, MAX_OPSET])  # 18: ReduceMax's axes become an input
def test_every_accepted_opset_exports_the_same_cell(trained: dict[str, Path], tmp_path: Path, opset: int) -> None:
    """vrnn-export accepts opsets MIN_OPSET to MAX_OPSET: at the ends and where an operator changes
    form, the cell passes the checker and its verification, and generates the default cell's text."""
    out = tmp_path / f"cell{opset}.onnx"
    export_cell(str(trained["checkpoint"]), str(out), opset=opset)  # verifies parity before writing
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    text = Sampler.from_onnx(out).generate(120, seed=5, temperature=0.9)
    assert text == Sampler.from_onnx(trained["cell"]).generate(120, seed=5, temperature=0.9)
