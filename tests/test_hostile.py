"""A hostile user's table: lying cells, malformed checkpoints, values that cannot work, across all six commands.

Every case must end with a non-zero exit (the stated one), exactly one line on stderr naming the problem, no
traceback, no input changed, and no file left behind: no output, no temporary file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import bin_path, default_stop_signals
from onnx import TensorProto, helper, numpy_helper

from vrnn.runtime import schema
from vrnn.training.config import MIN_VAL_CHARS
from vrnn.training.options import resolve_configs


def edited_cell(source: Path, target: Path, meta: dict[str, str] | None = None, graph_edit=None) -> Path:
    model = onnx.load(str(source))
    if meta:
        props = {p.key: p.value for p in model.metadata_props}
        props.update(meta)
        del model.metadata_props[:]
        helper.set_model_props(model, props)
    if graph_edit:
        graph_edit(model.graph)
    onnx.save(model, str(target))
    return target


def edited_checkpoint(source: Path, target: Path, edit) -> Path:
    payload = torch.load(source, map_location="cpu", weights_only=True)
    edit(payload)
    torch.save(payload, target)
    return target


def _rank_one_temperature(graph) -> None:
    temperature = next(i for i in graph.input if i.name == schema.INPUT_TEMPERATURE)
    temperature.type.tensor_type.shape.dim.add().dim_value = 1


def _allocate_16_gib(graph) -> None:
    graph.initializer.append(numpy_helper.from_array(np.array([65536, 65536], np.int64), "huge_shape"))
    graph.node.append(helper.make_node("ConstantOfShape", ["huge_shape"], ["huge"]))
    graph.output.append(helper.make_tensor_value_info("huge", TensorProto.FLOAT, [65536, 65536]))


def _nan_weights(graph) -> None:
    for i, tensor in enumerate(graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.size > 100:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full_like(array, np.nan), tensor.name))


def _picks(bad: int):
    """A graph edit: the cell's pick becomes `bad` wherever that step's uniform number is below 0.25.  The
    load-time probe runs with uniform 0.5 and sees only characters; sampling soon draws a number below 0.25."""

    def edit(graph) -> None:
        scan = next(n for n in graph.node if schema.OUTPUT_CHARS in n.output)
        scan.output[list(scan.output).index(schema.OUTPUT_CHARS)] = "chars_picked"
        graph.initializer.extend([numpy_helper.from_array(np.array(0.25), "bad_below"),
                                  numpy_helper.from_array(np.array(bad, np.int64), "bad_id")])  # fmt: skip
        # chars_picked + (u < 0.25) * (bad - chars_picked), in the operators a cell may have
        graph.node.extend([
            helper.make_node("Less", [schema.INPUT_UNIFORM, "bad_below"], ["bad_here"]),
            helper.make_node("Cast", ["bad_here"], ["bad_here_i"], to=TensorProto.INT64),
            helper.make_node("Sub", ["bad_id", "chars_picked"], ["bad_shift"]),
            helper.make_node("Mul", ["bad_here_i", "bad_shift"], ["bad_shift_here"]),
            helper.make_node("Add", ["chars_picked", "bad_shift_here"], [schema.OUTPUT_CHARS]),
        ])  # fmt: skip

    return edit


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, Path], tiny_corpus: Path) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    cell, ckpt = root / "cell.onnx", root / "ckpt.pt"
    shutil.copy(trained["cell"], cell)
    shutil.copy(trained["checkpoint"], ckpt)
    shutil.copy(tiny_corpus, root / "corpus.txt")
    (root / "other.txt").write_text("".join(sorted(tiny_corpus.read_text())), encoding="utf-8")  # same characters
    meta = {p.key: p.value for p in onnx.load(str(cell)).metadata_props}
    config, vocab = json.loads(meta[schema.META_CONFIG]), json.loads(meta[schema.META_VOCAB])

    def with_config(**changes: int) -> dict[str, str]:
        return {schema.META_CONFIG: json.dumps({**config, **changes})}

    cells = {
        "hidden": with_config(hidden_size=config["hidden_size"] + 1),
        "embed": with_config(embed_size=config["embed_size"] * 2),
        "latent": with_config(latent_size=config["latent_size"] + 3),
        "layers": with_config(layers=config["layers"] + 1),
        "hidden-2-29": with_config(hidden_size=2**29),
        "vocab-small": {schema.META_VOCAB: json.dumps(vocab[:-1]), **with_config(vocab_size=len(vocab) - 1)},
        "vocab-large": {
            schema.META_VOCAB: json.dumps([*vocab, "\u4e00", "\u4e01"]),
            **with_config(vocab_size=len(vocab) + 2),
        },
        "surrogate": {schema.META_VOCAB: json.dumps([*vocab[:-1], "\ud800"])},
        "start-char": {schema.META_START_CHAR: "\u4e00"},
        "bad-json": {schema.META_CONFIG: "{not json"},
    }
    for name, changes in cells.items():
        edited_cell(cell, root / f"cell-{name}.onnx", meta=changes)
    edited_cell(cell, root / "cell-temperature-rank1.onnx", graph_edit=_rank_one_temperature)
    edited_cell(cell, root / "cell-16gib.onnx", graph_edit=_allocate_16_gib)
    edited_cell(cell, root / "cell-nan.onnx", graph_edit=_nan_weights)
    edited_cell(cell, root / "cell-picks-past-end.onnx", graph_edit=_picks(len(vocab) + 32))
    edited_cell(cell, root / "cell-picks-minus-1.onnx", graph_edit=_picks(-1))

    def nan_weight(p: dict) -> None:
        p["model"]["decoder.weight"][0, 0] = float("nan")

    def huge_hidden(p: dict) -> None:
        p["model_config"]["hidden_size"] = 10**6

    checkpoints = {
        "vocab-int": lambda p: p.update(vocab=5),
        "step-text": lambda p: p.update(step="abc"),
        "metrics-text": lambda p: p.update(metrics="x"),
        "train-config-text": lambda p: p.update(train_config="x"),
        "train-config-steps": lambda p: p["train_config"].update(steps="abc"),
        "model-list": lambda p: p.update(model=[1, 2]),
        "model-config-text": lambda p: p.update(model_config="x"),
        "start-char": lambda p: p.update(start_char="\u4e00"),
        "surrogate": lambda p: p.update(vocab=[*p["vocab"][:-1], "\ud800"]),
        "nan": nan_weight,
        "hidden-1e6": huge_hidden,
    }
    for name, edit in checkpoints.items():
        edited_checkpoint(ckpt, root / f"ckpt-{name}.pt", edit)
    return root


def cases(a: Path) -> list[tuple[list[str], int, str]]:
    """(argv, exit status, words the one line must contain)."""
    run, sample, train, ev, export, score = (
        bin_path(c) for c in ("vrnn-run", "vrnn-sample", "vrnn-train", "vrnn-eval", "vrnn-export", "vrnn-score")
    )
    cell, ckpt, corpus = str(a / "cell.onnx"), str(a / "ckpt.pt"), str(a / "corpus.txt")
    out = str(a / "new-output.txt")
    tiny = ["--preset", "tiny", "--threads", "1", "-q", "--steps", "2"]
    table: list[tuple[list[str], int, str]] = []
    # Cells that lie (vrnn-run reads cells)
    for name, words in (
        ("hidden", "metadata"), ("embed", "metadata"), ("latent", "metadata"), ("layers", "metadata"),
        ("hidden-2-29", "hidden_size"), ("vocab-small", "metadata"), ("vocab-large", "metadata"),
        ("surrogate", "surrogate"), ("start-char", "start character"), ("bad-json", "malformed"),
        ("temperature-rank1", "temperature"), ("16gib", "ConstantOfShape"), ("nan", "non-finite"),
    ):  # fmt: skip
        table.append(([run, str(a / f"cell-{name}.onnx"), "-n", "20", "-o", out], 1, words))
        table.append(([score, str(a / f"cell-{name}.onnx"), corpus, "-k", "1"], 1, words))
    table.append(([run, str(a / "cell-nan.onnx"), "-n", "20", "--greedy"], 1, "non-finite"))
    # Cells that pass the load-time probe and pick a character id outside their vocabulary later
    size = len(json.loads({p.key: p.value for p in onnx.load(cell).metadata_props}[schema.META_VOCAB]))
    for name, pick in (("past-end", size + 32), ("minus-1", -1)):
        picks = str(a / f"cell-picks-{name}.onnx")
        bad = f"the cell picked character id {pick}, outside its vocabulary of {size} characters"
        table.append(([run, picks, "-n", "300", "--seed", "1", "-o", out], 1, bad))
        table.append(([run, picks, "-n", "300", "--seed", "1"], 1, bad))
        table.append(([run, picks, "-n", "300", "--seed", "1", "--num-samples", "3"], 1, bad))
    table.append(([score, cell, str(a)], 1, "is a directory"))
    table.append(([score, cell, str(a / "missing.txt")], 1, "cannot read"))
    table.append(([score, str(a / "missing.onnx"), corpus], 1, "missing.onnx"))
    # Checkpoints that lie, through every tool that reads one
    for name, words in (
        ("vocab-int", "vocab"), ("step-text", "step"), ("metrics-text", "metrics"),
        ("train-config-text", "train_config"), ("model-list", "model"), ("model-config-text", "model_config"),
        ("start-char", "start_char"), ("surrogate", "surrogate"), ("nan", "not finite"),
        ("hidden-1e6", "hidden_size"),
    ):  # fmt: skip
        bad = str(a / f"ckpt-{name}.pt")
        table.append(([export, bad, str(a / "new.onnx")], 1, words))
        table.append(([sample, bad, "-n", "5"], 1, words))
    for name, words in (("train-config-steps", "steps"), ("model-list", "model"), ("start-char", "start_char")):
        bad = str(a / f"ckpt-{name}.pt")
        table.append(([ev, corpus, "-c", bad], 1, words))
        copy = a / f"resume-{name}.pt"
        table.append(([train, corpus, "-o", str(copy), "--resume", "-q"], 1, words))
    # Options and values that cannot work
    table += [
        ([run, cell, "--seed", "-1"], 2, "--seed"),
        ([sample, ckpt, "--seed", "-1"], 2, "--seed"),
        ([run, cell, "--seed", str(2**70)], 2, "--seed"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--seed", str(2**70)], 2, "--seed"),
        ([ev, corpus, "-c", ckpt, "--seed", str(2**70)], 2, "--seed"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--lr", "1e300"], 2, "--lr"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--lr", "inf"], 2, "--lr"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--lr", "nan"], 2, "--lr"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--weight-decay", "nan"], 2, "--weight-decay"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--weight-decay", "inf"], 2, "--weight-decay"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--free-bits", "inf"], 2, "--free-bits"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--free-bits", "nan"], 2, "--free-bits"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--clip", "nan"], 2, "--clip"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--dropout", "nan"], 2, "--dropout"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--aux-weight", "-1"], 2, "--aux-weight"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--backward-size", "8"], 2, "--backward-size needs --posterior"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--val-chars", "1"], 2, "--val-chars must be 0"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--val-chars", "15"], 2, "at least 16"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--hidden-size", str(10**6)], 2, "hidden_size"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--hidden-size", "65536"], 1, "GiB"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny, "--batch-size", str(10**9)], 1, "GiB"),
        ([run, cell, "--threads", "0"], 2, "--threads"),
        ([run, cell, "--threads", str(10**6)], 2, "--threads"),
        ([sample, ckpt, "--threads", str(10**5)], 2, "--threads"),
        ([train, corpus, "-o", str(a / "t.pt"), *tiny[:2], "--threads", str(10**6)], 2, "--threads"),
        ([ev, corpus, "-c", ckpt, "--threads", str(10**6)], 2, "--threads"),
        ([run, cell, "--num-samples", "4096", "--length", "10000000"], 2, "--num-samples"),
        ([run, cell, "--latent-temperature", "nan"], 2, "--latent-temperature"),
        ([run, cell, "--latent-temperature", "1e300"], 2, "--latent-temperature must be a finite number in [0, 100]"),
        ([run, cell, "--latent-temperature", "1e38"], 2, "got 1e+38"),
        ([sample, ckpt, "--latent-temperature", "3.5e38"], 2, "--latent-temperature must be a finite number in"),
        ([sample, ckpt, "--latent-temperature", "100.5"], 2, "--latent-temperature"),
        ([run, cell, "--temperature", "inf"], 2, "--temperature"),
        ([sample, ckpt, "--top-p", "nan"], 2, "--top-p"),
        ([run, cell, "--length", "0"], 2, "--length"),
        # Resumes that would change the run
        ([train, str(a / "other.txt"), "-o", ckpt, "--resume", "-q"], 1, "--allow-corpus-change"),
        ([train, corpus, "-o", ckpt, "--resume", "--preset", "shakespeare", "-q"], 2, "--preset"),
        ([train, corpus, "-o", ckpt, "--resume", "--hidden-size", "7", "-q"], 2, "--hidden-size"),
        # Outputs that name no file (run in the scratch folder: '.' is it)
        ([train, corpus, "-o", "", *tiny], 2, "output path is empty"),
        ([train, corpus, "-o", ".", *tiny], 1, "output path is a directory"),
        ([train, corpus, "-o", "./", *tiny], 1, "output path is a directory"),
        ([train, corpus, "-o", "/", *tiny], 1, "output path is a directory: /"),
        ([run, cell, "-n", "5", "-o", ""], 2, "output path is empty"),
        ([sample, ckpt, "-n", "5", "-o", ""], 2, "output path is empty"),
        ([export, ckpt, ""], 2, "output path is empty"),
        ([ev, corpus, "-c", ckpt, "--plot", ""], 2, "output path is empty"),
        # Outputs that are inputs
        ([export, ckpt, ckpt], 2, "same file"),
        ([run, cell, "-n", "5", "-o", cell], 2, "same file"),
        ([sample, ckpt, "-n", "5", "-o", ckpt], 2, "same file"),
        ([ev, corpus, "-c", ckpt, "--plot", ckpt], 2, "same file"),
        ([train, corpus, "-o", corpus, "--force", *tiny], 2, "same file"),
        # A cell where a checkpoint belongs
        ([sample, cell, "-n", "5"], 1, "vrnn-run"),
        ([export, cell, str(a / "new.onnx")], 1, "ONNX cell"),
        # Standard output closed
        (["bash", "-c", f"'{run}' '{cell}' -n 5 >&-"], 1, "standard output is closed"),
        (["bash", "-c", f"'{sample}' '{ckpt}' -n 5 >&-"], 1, "standard output is closed"),
        (["bash", "-c", f"'{ev}' '{corpus}' -c '{ckpt}' >&-"], 1, "standard output is closed"),
    ]
    return table


def snapshot(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir() if p.is_file()}


@pytest.mark.slow
def test_hostile_cases_end_in_one_line_and_leave_everything_as_it_was(arena: Path) -> None:
    table = cases(arena)
    assert len(table) >= 60, len(table)
    for name in ("train-config-steps", "model-list", "start-char"):  # resume targets: the bad checkpoints
        shutil.copy(arena / f"ckpt-{name}.pt", arena / f"resume-{name}.pt")
    before = snapshot(arena)
    failures = []
    for argv, code, words in table:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=arena)
        err = result.stderr
        if result.returncode != code or err.count("\n") != 1 or "Traceback" in err or words not in err:
            failures.append(f"{' '.join(Path(x).name for x in argv)}: exit {result.returncode}, stderr {err!r}")
        after = snapshot(arena)
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))
            failures.append(f"{' '.join(Path(x).name for x in argv)} changed or left files: {changed}")
            before = after
    assert not failures, "\n".join(failures)


def test_the_training_options_keep_the_promises_of_their_help() -> None:
    """--val-chars N scores at most N characters: from 16 on (one per stretch), or 0 for all; --backward-size,
    like --aux-weight, belongs to the smoothing posterior (and 0, its default, to any)."""
    assert resolve_configs("tiny", {"val_chars": MIN_VAL_CHARS}, 10)[1].val_chars == MIN_VAL_CHARS
    assert resolve_configs("tiny", {"val_chars": 0}, 10)[1].val_chars == 0
    assert resolve_configs("tiny", {"backward_size": 0}, 10)[0].posterior == "filtering"
    config, _ = resolve_configs("tiny", {"posterior": "smoothing", "backward_size": 8}, 10)
    assert config.backward_width == 8


@pytest.mark.slow
def test_a_plain_gru_exports_to_int8_and_samples(tmp_path: Path, tiny_corpus: Path) -> None:
    """`--latent-size 0` leaves the latent's weight matrices without rows: int8 keeps them (empty)."""
    ckpt, cell = tmp_path / "gru.pt", tmp_path / "gru.onnx"
    tiny = ["--preset", "tiny", "--latent-size", "0", "--steps", "2", "--threads", "1", "-q"]
    commands = [
        [bin_path("vrnn-train"), str(tiny_corpus), "-o", str(ckpt), *tiny],
        [bin_path("vrnn-export"), str(ckpt), str(cell), "--weights", "int8"],
    ]
    for argv in commands:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    for options in ([], ["--top-k", "3"]):
        result = subprocess.run([bin_path("vrnn-run"), str(cell), "-n", "40", "--seed", "1", *options],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0 and len(result.stdout) == 41 and not result.stderr, result.stderr


def test_a_pick_outside_the_vocabulary_stops_the_text_before_any_of_it_is_printed(arena: Path) -> None:
    result = subprocess.run([bin_path("vrnn-run"), str(arena / "cell-picks-minus-1.onnx"), "-n", "300"],
                            capture_output=True, text=True, timeout=120, cwd=arena)  # fmt: skip
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr.startswith("error: the cell picked character id -1") and result.stderr.count("\n") == 1


def _importing_numpy(pid: int) -> bool:
    """Whether process `pid` has loaded numpy's core extension: it is importing its command's modules."""
    try:
        return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the child's imports")
def test_ctrl_c_while_a_command_imports_its_modules_is_one_line(arena: Path) -> None:
    """Ctrl-C from the first import of numpy on (where the console script's own code runs: before it, only the
    interpreter's start-up) to the first tenths of the run: a clean finish, or `error: interrupted` and 130."""
    out = arena / "interrupted.txt"
    commands = {
        "vrnn-run": [str(arena / "cell.onnx"), "-n", "20", "--seed", "1", "-o", str(out)],
        "vrnn-score": [str(arena / "cell.onnx"), str(arena / "corpus.txt"), "-k", "1", "-w", "32"],
    }
    before = snapshot(arena)
    failures = []
    for command, args in commands.items():
        for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4):
            proc = subprocess.Popen([bin_path(command), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, cwd=arena, preexec_fn=default_stop_signals)  # fmt: skip
            deadline = time.monotonic() + 60  # however loaded the machine: the delay counts from the imports
            while not _importing_numpy(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=120)
            if command == "vrnn-run":  # all of the text or none of it (a Ctrl-C just after the commit: all)
                written = out.read_text() if out.exists() else None
                whole = written is None or len(written) == 21
                done = whole and written is not None
                out.unlink(missing_ok=True)
            else:
                whole, done = True, "nats/char" in stdout
            finished = proc.returncode == 0 and not stderr and done
            interrupted = (proc.returncode, stderr) == (130, "error: interrupted\n") and whole
            if not (finished or interrupted):
                failures.append(f"{command}, SIGINT {delay} s in: exit {proc.returncode}, stderr {stderr[-600:]!r}")
            assert snapshot(arena) == before, f"{command} left files behind"
    assert not failures, "\n".join(failures)
