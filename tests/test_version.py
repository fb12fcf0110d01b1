"""One version for everything released together: the Python package (vrnn.__version__, which setuptools reads
for the wheel's metadata), the JavaScript package (package.json and its lock file), and the newest release in
CHANGELOG.md.  Every command's --version prints it (tests/test_runtime_only.py)."""

from __future__ import annotations

import importlib.metadata
import json
import re

from conftest import REPO

import vrnn


def test_python_and_javascript_packages_share_one_version() -> None:
    package = json.loads((REPO / "clients/js/package.json").read_text(encoding="utf-8"))
    lock = json.loads((REPO / "clients/js/package-lock.json").read_text(encoding="utf-8"))
    assert package["version"] == lock["version"] == lock["packages"][""]["version"] == vrnn.__version__


def test_the_installed_metadata_is_the_packages_version() -> None:
    """pyproject.toml holds no version of its own: setuptools reads vrnn.__version__."""
    assert 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert importlib.metadata.version("vrnn") == vrnn.__version__


def test_the_changelog_describes_this_version_as_its_newest_release() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", changelog, flags=re.M)
    assert releases and releases[0][0] == vrnn.__version__
    versions = [tuple(int(part) for part in version.split(".")) for version, _ in releases]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    dates = [date for _, date in releases]
    assert dates == sorted(dates, reverse=True)
