"""The runtime-only install (`pip install .`: numpy, onnxruntime, click): every command's --help works, and
the torch-side commands and vrnn-serve say in one line which extra to install.  The missing packages are
simulated by an import hook in a fresh interpreter that makes the extras' packages unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import vrnn

HIDE = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "matplotlib", "starlette", "uvicorn", "prometheus_client"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Hide())
"""

COMMANDS = {
    "vrnn-train": "vrnn.training.cli",
    "vrnn-eval": "vrnn.training.eval_cli",
    "vrnn-export": "vrnn.export.cli",
    "vrnn-sample": "vrnn.export.sample_cli",
    "vrnn-run": "vrnn.runtime.cli",
    "vrnn-score": "vrnn.runtime.score_cli",
    "vrnn-serve": "vrnn.runtime.serving.cli",
}


def run_without_torch(module: str, *args: str) -> subprocess.CompletedProcess:
    code = f"{HIDE}\nfrom {module} import main\nmain({list(args)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_and_version_work_without_torch(command: str) -> None:
    result = run_without_torch(COMMANDS[command], "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "Traceback" not in result.stderr
    # Where the command cannot run here, its help says what to install, by name and from a checkout.
    extra = {"vrnn-run": None, "vrnn-score": None, "vrnn-serve": "serve"}.get(command, "train")
    install = f"pip install 'vrnn[{extra}]' (from a checkout: pip install '.[{extra}]')"
    assert (install in " ".join(result.stdout.split())) == (extra is not None), result.stdout
    version = run_without_torch(COMMANDS[command], "--version")
    assert version.returncode == 0 and version.stdout.strip().endswith(vrnn.__version__), version.stderr


@pytest.mark.slow
def test_torch_side_commands_name_the_extra_in_one_line(tmp_path: Path, trained: dict[str, Path]) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 50)
    ckpt = str(trained["checkpoint"])
    cases = {
        "vrnn-train": [str(text), "-o", str(tmp_path / "m.pt")],
        "vrnn-eval": [str(text), "-c", ckpt],
        "vrnn-export": [ckpt, str(tmp_path / "c.onnx")],
        "vrnn-sample": [ckpt, "-n", "5"],
    }
    for command, args in cases.items():
        result = run_without_torch(COMMANDS[command], *args)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "pip install 'vrnn[train]' (from a checkout: pip install '.[train]')" in result.stderr
        assert command in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]  # nothing written
    ran = run_without_torch(COMMANDS["vrnn-run"], str(trained["cell"]), "-n", "5", "--seed", "1")
    assert ran.returncode == 0 and len(ran.stdout) == 6, ran.stderr
    scored = run_without_torch(COMMANDS["vrnn-score"], str(trained["cell"]), str(text.parent / "t.txt"), "-k", "1")
    assert scored.returncode == 0 and "nats/char" in scored.stdout, scored.stderr


def test_vrnn_serve_names_its_extra_in_one_line() -> None:
    result = run_without_torch(COMMANDS["vrnn-serve"], "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: vrnn-serve needs starlette, uvicorn and prometheus_client, which this install lacks: "
        "pip install 'vrnn[serve]' (from a checkout: pip install '.[serve]')"
    )
