"""float16 and int8 cells (`vrnn-export --weights`): smaller files, the same interface, a measured and bounded
departure from the float32 cell, refusal beyond it; and vrnn-score, which measures that departure on text."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import TINY_TEXT, bin_path
from onnx import helper, numpy_helper

from vrnn.export.cli import export_cell
from vrnn.export.onnx_cell import quantize_columns
from vrnn.export.thresholds import MAX_MEAN_KL
from vrnn.export.verify import lossy_agreement
from vrnn.runtime import Sampler, schema
from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.loop import SeededNoise
from vrnn.runtime.scoring import score_cell, teacher_forced_logits


@pytest.fixture(scope="module")
def cells(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("weights")
    paths = {"float32": trained["cell"]}
    for weights in ("float16", "int8"):
        paths[weights] = out / f"cell-{weights}.onnx"
        export_cell(str(trained["checkpoint"]), str(paths[weights]), weights=weights)
    return paths


def test_quantize_columns_is_symmetric_per_column_and_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((50, 7)).astype(np.float32) * np.array([1e-3, 0.1, 1, 10, 100, 1, 1], np.float32)
    matrix[:, 5] = 0.0  # an all-zero column
    matrix[3, 6] = -42.0  # the peak is negative
    quantized, scale = quantize_columns(matrix)
    assert quantized.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (7,)
    assert np.abs(quantized).max() == 127 and quantized.min() >= -127  # never -128: symmetric
    assert quantized[3, 6] == -127
    assert np.all(quantized[:, 5] == 0) and scale[5] == 1.0
    error = np.abs(quantized * scale.astype(np.float64) - matrix)
    assert np.all(error <= scale * 0.5 * (1 + 1e-6))


def test_each_format_stores_its_matrices_and_says_so(cells: dict[str, Path]) -> None:
    sizes = {weights: path.stat().st_size for weights, path in cells.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    for weights, path in cells.items():
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta[schema.META_WEIGHTS] == weights
        assert [i.name for i in model.graph.input] == list(schema.INPUT_NAMES)  # the same interface
        assert [o.name for o in model.graph.output] == list(schema.OUTPUT_NAMES)
        # (the sampling's index row [1, V] is int64 in every format: not a weight)
        matrices = [t for t in model.graph.initializer if len(t.dims) == 2 and t.data_type != onnx.TensorProto.INT64]
        # int8: the state products' weights are stored shifted to uint8 (exact uint8 x uint8 MatMulInteger)
        elements = {"float32": {onnx.TensorProto.FLOAT}, "float16": {onnx.TensorProto.FLOAT16},
                    "int8": {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}}[weights]  # fmt: skip
        assert matrices and all(t.data_type in elements for t in matrices)
        assert OnnxCell(path).info.weights == weights


def test_lossy_cells_follow_the_float32_cell_closely(cells: dict[str, Path]) -> None:
    reference = cells["float32"].read_bytes()
    for weights in ("float16", "int8"):
        agreement = lossy_agreement(reference, cells[weights].read_bytes())
        assert agreement.steps == 8 * 256
        assert agreement.mean_kl <= MAX_MEAN_KL[weights]
        assert agreement.argmax_agreement > 0.9
    same = lossy_agreement(reference, reference)
    assert same.mean_kl == 0.0 and same.max_logit_diff == 0.0 and same.argmax_agreement == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["float16", "int8"])
def test_same_seed_same_text_in_every_format(cells: dict[str, Path], weights: str) -> None:
    run = [bin_path("vrnn-run"), str(cells[weights]), "--length", "200", "--seed", "3", "--prime", "ROMEO:"]
    first = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 200 + 1
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout == first
    batch = Sampler.from_onnx(cells[weights]).generate(100, seed=4, num_samples=3)
    assert Sampler.from_onnx(cells[weights]).generate(100, seed=4, num_samples=3) == batch


def test_int8_rows_do_not_depend_on_the_rest_of_the_batch(cells: dict[str, Path]) -> None:
    """The state is quantized with a fixed scale, not one computed from the whole batch: a row's logits are
    its logits alone, up to float32 rounding (which differs between batch sizes in every format); a scale
    taken from the batch would move them by about 1e-2."""
    cell = OnnxCell(cells["int8"], batch=4)
    rng = np.random.default_rng(0)
    steps, z = 5, cell.config.latent_size
    prev = rng.integers(0, len(cell.vocab), 4)
    state = {k: rng.uniform(-0.9, 0.9, v.shape).astype(np.float32) for k, v in cell.initial_state(4).items()}
    eps, uniform = rng.standard_normal((steps, 4, z), dtype=np.float32), rng.random((steps, 4))
    _, together, _ = cell.steps(prev, state, eps, uniform, 1.0)
    for row in range(4):
        alone = {k: v[:, row : row + 1] if k == schema.INPUT_H else v[row : row + 1] for k, v in state.items()}
        _, logits, _ = cell.steps(prev[row : row + 1], alone, eps[:, row : row + 1], uniform[:, row : row + 1], 1.0)
        np.testing.assert_allclose(logits[:, 0], together[:, row], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_export_refuses_a_cell_beyond_the_tolerance_and_writes_nothing(trained: dict, tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    run = subprocess.run(
        [bin_path("vrnn-export"), str(trained["checkpoint"]), str(out), "--weights", "int8", "--max-kl", "1e-12"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the int8 cell departs from the float32 cell by a mean KL of")
    assert "not written" in lines[-1] and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "int4"], "Invalid value for '--weights'"),
        (["--weights", "int8", "--max-kl", "0"], "--max-kl must be in (0, 1e+06]"),
        (["--weights", "int8", "--max-kl", "nan"], "--max-kl must be a finite number"),
    ],
)
def test_export_refuses_bad_weight_options(trained: dict[str, Path], tmp_path: Path, args: list, message: str) -> None:
    out = tmp_path / "cell.onnx"
    run = subprocess.run([bin_path("vrnn-export"), str(trained["checkpoint"]), str(out), *args],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()


def test_teacher_forcing_along_the_cells_own_text_repeats_its_logits(cells: dict[str, Path]) -> None:
    """Fed back the characters it picked, with the same noise, the cell computes the same logits."""
    cell = OnnxCell(cells["int8"], batch=3)
    steps, z = 40, cell.config.latent_size
    noise = SeededNoise(5, 3, z)
    eps, uniform = noise.eps(steps), noise.uniform(steps)
    start = np.full(3, cell.vocab.chars.index(cell.start_char))
    chars, logits, _ = cell.steps(start, cell.initial_state(3), eps, uniform, 1.0)
    inputs = np.concatenate([start[:, None], chars[:-1].T], axis=1)
    np.testing.assert_allclose(teacher_forced_logits(cell, inputs, eps), logits, rtol=0, atol=1e-5)


def test_score_cell_bounds_and_shared_noise(cells: dict[str, Path]) -> None:
    ids = OnnxCell(cells["float32"]).vocab.encode("\n" + TINY_TEXT)
    scores = {w: score_cell(OnnxCell(p, batch=4), ids, window=64, samples=4, seed=1) for w, p in cells.items()}
    for score in scores.values():
        assert score.chars == len(TINY_TEXT)
        assert 0 < score.iw_nats <= score.mean_nats  # log-mean-exp >= mean-log (Jensen)
    one = score_cell(OnnxCell(cells["float32"]), ids, window=64, samples=1, seed=1)
    assert one.iw_nats == pytest.approx(one.mean_nats, abs=1e-12)
    assert score_cell(OnnxCell(cells["float32"]), ids, window=64, samples=4, seed=1) == scores["float32"]
    assert abs(scores["float16"].iw_nats - scores["float32"].iw_nats) < 1e-3
    assert abs(scores["int8"].iw_nats - scores["float32"].iw_nats) < 0.05


def test_vrnn_score_cli(cells: dict[str, Path], tiny_corpus: Path) -> None:
    run = subprocess.run(
        [bin_path("vrnn-score"), str(cells["int8"]), str(tiny_corpus), "--split", "val", "-w", "32", "-k", "2",
         "--json"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert result["weights"] == "int8" and result["split"] == "val" and result["samples"] == 2
    assert result["chars"] == len(TINY_TEXT) - int(len(TINY_TEXT) * 0.9)
    assert 0 < result["iw_nats"] <= result["mean_nats"] < 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", "0"], "--samples must be from 1 to 4096"),
        (["-w", "0"], "--window must be from 1 to"),
        (["--seed", "-1"], "--seed must be"),
        (["--threads", "0"], "--threads must be"),
    ],
)
def test_vrnn_score_refuses_bad_options(cells: dict[str, Path], tiny_corpus: Path, args: list, message: str) -> None:
    run = subprocess.run([bin_path("vrnn-score"), str(cells["float32"]), str(tiny_corpus), *args],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_vrnn_score_refuses_bad_text(cells: dict[str, Path], tmp_path: Path) -> None:
    cases = {"binary.txt": b"ROMEO\xff\xfe", "greek.txt": "ROMEO: \u03b1\u03b2".encode(), "empty.txt": b""}
    expected = {
        "binary.txt": "is not UTF-8 text (invalid byte at offset 5)",
        "greek.txt": "characters outside the model's vocabulary",
        "empty.txt": "leaves nothing to score",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        run = subprocess.run([bin_path("vrnn-score"), str(cells["float32"]), str(tmp_path / name)],
                             capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 1 and expected[name] in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_int8_state_products_are_exact_integer_arithmetic_on_every_cpu(cells: dict[str, Path]) -> None:
    """The int8 cell's MatMulInteger nodes take uint8 weights with zero point 128: onnxruntime's uint8 x int8
    kernel saturates pairs of products in int16 on CPUs without VNNI (texts then differ between machines),
    its uint8 x uint8 kernel never does.  Checked here on the worst case, every state entry at the extreme."""
    model = onnx.load(str(cells["int8"]))
    stored = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    nodes += [n for g in model.graph.node for a in g.attribute if a.g for n in a.g.node if n.op_type == "MatMulInteger"]
    assert nodes
    for node in nodes:
        weight, zero = stored[node.input[1]], numpy_helper.to_array(stored[node.input[3]])
        assert weight.data_type == onnx.TensorProto.UINT8 and zero == 128
    weight = numpy_helper.to_array(stored[nodes[0].input[1]])
    state = np.full((2, weight.shape[0]), 255, np.uint8)
    state[1] = 0
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "z", "z"], ["y"])], "product",
        [helper.make_tensor_value_info("a", onnx.TensorProto.UINT8, list(state.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT32, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(128, np.uint8), "z")],
    )  # fmt: skip
    product = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    product.ir_version = 8
    session = onnxruntime.InferenceSession(product.SerializeToString(), providers=["CPUExecutionProvider"])
    exact = (state.astype(np.int64) - 128) @ (weight.astype(np.int64) - 128)
    np.testing.assert_array_equal(session.run(None, {"a": state})[0], exact)
