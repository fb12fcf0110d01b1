"""The torch-free runtime: no torch import, model validation, option refusals, the one-way imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import REPO, bin_path
from onnx import TensorProto, helper

from vrnn.runtime import Sampler, VrnnError, schema


def test_runtime_never_imports_torch(trained: dict[str, Path]) -> None:
    """In a fresh interpreter: import the runtime, sample through the API and through vrnn-run's main."""
    code = f"""
import sys
import vrnn.runtime
from vrnn.runtime import Sampler
Sampler.from_onnx({str(trained["cell"])!r}).generate(50, seed=1)
from vrnn.runtime.cli import main
try:
    main([{str(trained["cell"])!r}, "--length", "20", "--seed", "3"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
banned = ("torch", "onnx", "vrnn.models", "vrnn.training", "vrnn.export")
bad = sorted(m for m in sys.modules if m.startswith(banned) and m.split(".")[0] != "onnxruntime")
assert not bad, bad
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("runtime", ("torch", "onnx", "vrnn.models", "vrnn.training", "vrnn.export")),
        ("models", ("vrnn.training", "vrnn.export")),
        ("training", ("vrnn.export",)),
        ("export", ("vrnn.training",)),
    ],
)
def test_imports_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    for source in (REPO / package).glob("*.py"):
        for name in imported_modules(source):
            assert not any(name == f or name.startswith(f + ".") for f in forbidden), f"{source.name} imports {name}"
            assert name.split(".")[0] not in ("runtime", "models", "training", "export"), f"bare import {name}"


def cell_with_metadata(source: Path, target: Path, **changes: str | None) -> Path:
    model = onnx.load(str(source))
    meta = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    del model.metadata_props[:]
    helper.set_model_props(model, meta)
    onnx.save(model, str(target))
    return target


def identity_model(target: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(target))
    return target


def bad_cells(trained: dict[str, Path], tmp: Path) -> dict[str, tuple[Path, str]]:
    cell = trained["cell"]
    data = cell.read_bytes()
    (tmp / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp / "text.onnx").write_text("this is not an onnx file\n")
    (tmp / "empty.onnx").write_bytes(b"")
    (tmp / "dir.onnx").mkdir()
    return {
        "truncated": (tmp / "truncated.onnx", "truncated"),
        "text": (tmp / "text.onnx", "not an ONNX file"),
        "empty": (tmp / "empty.onnx", "not an ONNX file"),
        "directory": (tmp / "dir.onnx", "directory"),
        "missing": (tmp / "missing.onnx", "not found"),
        "other model": (identity_model(tmp / "identity.onnx"), "not a vrnn cell"),
        "no metadata": (cell_with_metadata(cell, tmp / "nometa.onnx", **{schema.META_VOCAB: None}), "lacks metadata"),
        "newer schema": (
            cell_with_metadata(cell, tmp / "newer.onnx", **{schema.META_SCHEMA_VERSION: "99"}),
            "schema version 99",
        ),
        "bad config": (
            cell_with_metadata(cell, tmp / "badcfg.onnx", **{schema.META_CONFIG: json.dumps({"vocab_size": 3})}),
            "vocabulary has",
        ),
    }


@pytest.mark.slow
def test_bad_cells_are_refused_by_api_and_cli(trained: dict[str, Path], tmp_path: Path) -> None:
    for label, (path, message) in bad_cells(trained, tmp_path).items():
        with pytest.raises(VrnnError, match=message):
            Sampler.from_onnx(path)
        result = subprocess.run([bin_path("vrnn-run"), str(path), "-n", "5"], capture_output=True, text=True)
        assert result.returncode == 1, label
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (label, result.stderr)
        assert result.stdout == "", label


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--length", "0"], "--length"),
        (["--length", "-5"], "--length"),
        (["--length", "100000000000"], "--length"),
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "nan"], "--temperature"),
        (["--temperature", "inf"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-k", "0"], "--top-k"),
        (["--top-k", "1000"], "--top-k"),
        (["--num-samples", "0"], "--num-samples"),
        (["--greedy", "--temperature", "0.5"], "--greedy"),
        (["--prime", "ROMEO: \u00e9\u4e2d"], "--prime"),
        (["--threads", "0"], "--threads"),
        (["--length", "ten"], "--length"),
    ],
)
@pytest.mark.slow
def test_bad_options_exit_2_with_one_line(trained: dict[str, Path], tmp_path: Path, flags: list[str], message: str):
    out = tmp_path / "out.txt"
    result = subprocess.run([bin_path("vrnn-run"), str(trained["cell"]), *flags, "-o", str(out)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_output_file_and_samples(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sample.txt"
    result = subprocess.run([bin_path("vrnn-run"), str(trained["cell"]), "-n", "200", "--seed", "1", "-o", str(out),
                             "--num-samples", "3", "--prime", "ROMEO:"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.count("--- sample ") == 3 and text.count("ROMEO:") >= 3
    assert result.stdout == ""
    stream = subprocess.run([bin_path("vrnn-run"), str(trained["cell"]), "-n", "200", "--seed", "1", "--prime",
                             "ROMEO:"], capture_output=True, text=True)  # fmt: skip
    assert stream.stdout.startswith("ROMEO:") and len(stream.stdout) == len("ROMEO:") + 200 + 1
    missing_dir = subprocess.run([bin_path("vrnn-run"), str(trained["cell"]), "-o", str(tmp_path / "no" / "x.txt")],
                                 capture_output=True, text=True)  # fmt: skip
    assert missing_dir.returncode == 1 and "does not exist" in missing_dir.stderr


def test_thread_default_follows_the_work_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from vrnn.export.sample_cli import MULTI_THREAD_BATCH, torch_threads
    from vrnn.runtime.cell import MULTI_THREAD_WORK, default_threads, step_multiply_adds
    from vrnn.runtime.schema import ModelConfig

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    bundled, writeup = ModelConfig(65, 64, 512, 32), ModelConfig(65, 64, 64, 64)
    # The cell's matrix products, counted by hand for the write-up's sizes: phi_z's GRU input product
    # (phi_x's is a table), the recurrent one, prior and decoder's h-part, phi_z, decoder's z-part.
    assert step_multiply_adds(writeup) == 64 * 192 + 64 * 192 + 64 * 193 + 64 * 64 + 64 * 65
    assert step_multiply_adds(bundled) >= MULTI_THREAD_WORK > 8 * step_multiply_adds(writeup)
    assert default_threads(1, bundled) == 8  # matrix products dominate even for one sample
    assert default_threads(1, writeup) == default_threads(8, writeup) == 1  # per-node cost dominates
    assert default_threads(32, writeup) == 8
    # The PyTorch path (vrnn-sample): by batch size.
    assert torch_threads(1) == torch_threads(MULTI_THREAD_BATCH - 1) == 1
    assert torch_threads(MULTI_THREAD_BATCH) == torch_threads(4096) == 8
    monkeypatch.setattr("os.cpu_count", lambda: None)  # unknown: one thread, never zero
    assert torch_threads(256) == default_threads(256, bundled) == 1


@pytest.mark.parametrize("name", ["cell.onnx", "cell-float16.onnx", "cell-int8.onnx"])
def test_a_row_is_computed_the_same_at_any_batch_size_and_thread_count(name: str) -> None:
    """One session with packed weights runs every batch: a sample's row of logits and state is bit for bit
    the same alone (batch 1), among 2 or 200 rows, and on 1 or 2 threads.  vrnn-serve's "same seed, same
    text as vrnn-run, whatever else is in flight" rests on this."""
    from vrnn.runtime.cell import OnnxCell

    path = Path(__file__).parent / "conformance" / name
    rng = np.random.default_rng(0)
    cells = [OnnxCell(path, threads=1), OnnxCell(path, threads=2, batch=64)]
    config = cells[0].config
    batch = 200
    state = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in cells[0].initial_state(batch).items()}
    prev = rng.integers(0, config.vocab_size, batch)
    eps = rng.standard_normal((3, batch, config.latent_size)).astype(np.float32)
    uniform = rng.random((3, batch))

    def rows(cell: OnnxCell, n: int) -> tuple[np.ndarray, ...]:
        sub = {k: v[..., :n, :] for k, v in state.items()}
        chars, logits, new = cell.steps(prev[:n], sub, eps[:, :n], uniform[:, :n], 0.9)
        return chars, logits, new["h"], new["phi_z"]

    reference = rows(cells[0], batch)
    for cell in cells:
        for n in (1, 2, batch):
            chars, logits, h, phi_z = rows(cell, n)
            np.testing.assert_array_equal(chars, reference[0][:, :n])
            np.testing.assert_array_equal(logits, reference[1][:, :n])
            np.testing.assert_array_equal(h, reference[2][:, :n])
            np.testing.assert_array_equal(phi_z, reference[3][:n])


def test_options_are_keywords_named_by_sampling_options(trained: dict[str, Path]) -> None:
    """One way to pass options: keywords, the fields of SamplingOptions; stream gives generate's text."""
    from dataclasses import asdict

    from vrnn.runtime import SamplingOptions, UsageError

    sampler = Sampler.from_onnx(trained["cell"])
    expected = sampler.generate(60, prime="RO", temperature=0.7, top_k=5, seed=4)
    assert sampler.generate(60, prime="RO", seed=4, **asdict(SamplingOptions(temperature=0.7, top_k=5))) == expected
    assert "RO" + "".join(sampler.stream(60, prime="RO", seed=4, temperature=0.7, top_k=5)) == expected
    with pytest.raises(UsageError, match="unknown sampling option 'temprature'"):
        sampler.generate(10, temprature=0.7)
    with pytest.raises(UsageError, match="--top-k"):  # stream validates when called, not at its first character
        sampler.stream(10, top_k=0)
    with pytest.raises(TypeError):  # keyword-only: reordering the fields can never swap two options
        SamplingOptions(0.7, 5)  # type: ignore[misc]
