"""The packages people install: the sdist and the wheel build from the checkout and pass `twine check --strict`;
the sdist builds the same wheel; the wheel, installed into a fresh virtual environment and run from a folder
outside the repository, samples the bundled model exactly as the checkout does, says what to install for the
commands its extras bring, and runs vrnn-serve once the `serve` extra is in.

Slow (two builds and a fresh environment with numpy and onnxruntime from the package index: about a minute):
`make check` leaves it out, `make test` and CI run it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

import vrnn

pytestmark = pytest.mark.slow

# The wheel carries the bundled model twice (the cell for vrnn-run, its checkpoint for vrnn-eval): 8.2 MB on
# 2026-12-07, nearly all of it those two files.  A wheel past this has gained something nobody meant to ship.
MAX_WHEEL_BYTES = 10 * 1024 * 1024
SAMPLE = ["--length", "300", "--seed", "7", "--temperature", "0.8"]


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `command` with no vrnn checkout on its path; fail the test on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command_line = [str(c) for c in command]
    result = subprocess.run(command_line, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
    return result


def copy_checkout(destination: Path) -> Path:
    """The checkout as git would commit it (tracked files and untracked ones it does not ignore), without the
    build/ and *.egg-info leftovers an in-place build would read from."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # (a file deleted but not yet committed is listed and absent)
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def wheel_contents(wheel: Path) -> dict[str, str]:
    """Each file of `wheel` and its sha256."""
    with zipfile.ZipFile(wheel) as archive:
        return {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from a copy of the checkout, and a second wheel built from that sdist."""
    root = tmp_path_factory.mktemp("packaging")
    source = copy_checkout(root / "checkout")
    build = (sys.executable, "-m", "build", "--no-isolation")
    run(*build, "--sdist", "--wheel", "--outdir", root / "dist", source, cwd=root)
    sdist = next((root / "dist").glob("vrnn-*.tar.gz"))
    run(*build, "--wheel", "--outdir", root / "from-sdist", sdist, cwd=root)
    return {
        "root": root,
        "sdist": sdist,
        "wheel": next((root / "dist").glob("vrnn-*.whl")),
        "wheel_from_sdist": next((root / "from-sdist").glob("vrnn-*.whl")),
    }


@pytest.fixture(scope="module")
def fresh_env(built: dict[str, Path]) -> Path:
    """A new virtual environment with the wheel (its base install alone) in it: its bin/ folder."""
    env = built["root"] / "venv"
    run(sys.executable, "-m", "venv", env, cwd=built["root"])
    run(env / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", built["wheel"],
        cwd=built["root"])  # fmt: skip
    return env / "bin"


def test_both_packages_pass_twine_check_strict(built: dict[str, Path]) -> None:
    result = run(sys.executable, "-m", "twine", "check", "--strict", built["sdist"], built["wheel"], cwd=built["root"])
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_sdist_builds_the_same_wheel(built: dict[str, Path]) -> None:
    assert built["wheel"].name == f"vrnn-{vrnn.__version__}-py3-none-any.whl"
    direct, from_sdist = wheel_contents(built["wheel"]), wheel_contents(built["wheel_from_sdist"])
    assert sorted(direct) == sorted(from_sdist)
    assert [name for name in direct if direct[name] != from_sdist[name]] == []


def test_the_wheel_holds_every_package_and_both_models_within_its_size(built: dict[str, Path]) -> None:
    names = set(wheel_contents(built["wheel"]))
    for package in ("runtime", "runtime/serving", "models", "training", "export"):
        assert f"vrnn/{package}/__init__.py" in names, package
    assert {"vrnn/runtime/bundled-cell/shakespeare.onnx", "vrnn/models/bundled-checkpoint/shakespeare.pt"} <= names
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/", "clients/"))]
    size = built["wheel"].stat().st_size
    print(f"wheel {built['wheel'].name}: {size:,} bytes")  # recorded in the test log (-rA, -s)
    assert size < MAX_WHEEL_BYTES


def test_the_installed_wheel_samples_what_the_checkout_samples(fresh_env: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    installed = run(fresh_env / "vrnn-run", *SAMPLE, cwd=outside).stdout
    checkout = run(sys.executable, "-m", "vrnn.runtime.cli", *SAMPLE, cwd=REPO).stdout
    assert installed == checkout and len(installed) == 301
    where = run(fresh_env / "python", "-c", "import vrnn.runtime; print(vrnn.runtime.__file__)", cwd=outside).stdout
    assert str(fresh_env.parent) in where and str(REPO) not in where
    version = run(fresh_env / "vrnn-run", "--version", cwd=outside).stdout
    assert version.strip() == f"vrnn-run {vrnn.__version__}"


def test_the_base_install_says_what_each_extra_brings(fresh_env: Path, tmp_path: Path) -> None:
    helped = run(fresh_env / "vrnn-train", "--help", cwd=tmp_path).stdout
    assert "pip install 'vrnn[train]' (from a checkout: pip install '.[train]')" in " ".join(helped.split())
    refused = subprocess.run([fresh_env / "vrnn-serve", "--port", "0"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "pip install 'vrnn[serve]' (from a checkout: pip install '.[serve]')" in refused.stderr


def test_the_serve_extra_brings_vrnn_serve(built: dict[str, Path], fresh_env: Path, tmp_path: Path) -> None:
    run(fresh_env / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        f"vrnn[serve] @ {built['wheel'].as_uri()}", cwd=tmp_path)  # fmt: skip
    helped = run(fresh_env / "vrnn-serve", "--help", cwd=tmp_path).stdout
    assert "Usage:" in helped and "pip install" not in helped
