"""The package's shape: imports point one way (runtime <- models <- training, export), and no two modules
import each other, directly or around a loop, whether at the top of a file or inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = {"runtime": "vrnn.runtime", "models": "vrnn.models", "training": "vrnn.training", "export": "vrnn.export"}
# What each package may import from the others (itself aside).
ALLOWED = {
    "vrnn.runtime": set(),
    "vrnn.models": {"vrnn.runtime"},
    "vrnn.training": {"vrnn.runtime", "vrnn.models"},
    "vrnn.export": {"vrnn.runtime", "vrnn.models"},
}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [package, *path.relative_to(REPO / folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The vrnn modules `path` imports anywhere in it (a package's names resolve to the module that holds
    them where that is a module, else to the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vrnn."):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("vrnn."))
    return found


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_imports_point_one_way() -> None:
    known = modules()
    wrong = [
        f"{module} imports {target}"
        for module, path in known.items()
        for target in imports(path, known)
        if package_of(target) != package_of(module) and package_of(target) not in ALLOWED[package_of(module)]
    ]
    assert not wrong


SERVING = "vrnn.runtime.serving"


def test_the_sampling_runtime_never_imports_the_http_service() -> None:
    """vrnn.runtime.serving (vrnn-serve, the `serve` extra) sits on the sampling runtime, never under it."""
    known = modules()
    wrong = [
        f"{module} imports {target}"
        for module, path in known.items()
        if module.startswith("vrnn.runtime") and not module.startswith(SERVING)
        for target in imports(path, known)
        if target.startswith(SERVING)
    ]
    assert not wrong
    assert any(module.startswith(f"{SERVING}.") for module in known)  # the walk does reach the subpackage


def test_sampling_loads_no_http_module() -> None:
    """What `vrnn-run` and an embedding program import leaves the service and its web packages unloaded."""
    probe = (
        "import sys, vrnn.runtime, vrnn.runtime.cli, vrnn.runtime.score_cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('vrnn.runtime.serving', 'starlette', 'uvicorn'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", (result.stdout, result.stderr)


def test_no_import_cycle_even_through_lazy_imports() -> None:
    known = modules()
    graph = {module: {t for t in imports(path, known) if t in known and t != module} for module, path in known.items()}
    cycles = []

    def visit(start: str, module: str, path: list[str]) -> None:
        for target in graph[module]:
            if target == start:
                cycles.append(" -> ".join([*path, start]))
            elif target > start and target not in path:
                visit(start, target, [*path, target])

    for module in sorted(graph):
        visit(module, module, [module])
    assert not cycles


def test_a_plain_install_imports_from_the_repository_root(tmp_path: Path) -> None:
    """Started in the checkout, Python finds its vrnn/ folder first; the installed subpackages must still load
    (vrnn/__init__.py extends its path).  -S keeps the editable install's finder out of it."""
    installed = tmp_path / "site" / "vrnn"
    (installed / "runtime").mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    (installed / "runtime" / "__init__.py").write_text("WHERE = 'installed'\n")
    probe = "import vrnn.runtime; print(vrnn.runtime.WHERE)"
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path / "site")}, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "installed", result.stderr
