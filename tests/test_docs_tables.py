"""The measured tables in docs/latent.md are the ones the committed results print: a result added to
benchmarks/ without its table in the docs (or a table edited by hand) fails here, so the page cannot drift
from the numbers it cites.  The prose around the tables is checked by reading, not here."""

from __future__ import annotations

import json
import re
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bound_vs_k
import latent_study

LATENT_DOC = REPO / "docs" / "latent.md"


def markdown_tables(text: str) -> list[str]:
    """Each run of consecutive table lines ("| ..."), as one string."""
    return re.findall(r"(?:^\|.*\n?)+", text, flags=re.M)


def missing_from_doc(printed: str) -> list[str]:
    """Of each printed table the docs do not show whole, its first line they lack (else its header)."""
    doc = LATENT_DOC.read_text(encoding="utf-8")
    tables = markdown_tables(printed)
    assert tables, "the script printed no table"
    stale = [table.splitlines() for table in tables if table.rstrip("\n") not in doc]
    return [next((line for line in lines if line not in doc), lines[0]) for lines in stale]


def test_the_study_tables_in_the_docs_are_the_committed_results() -> None:
    results = json.loads(latent_study.RESULTS.read_text(encoding="utf-8"))
    missing = missing_from_doc(latent_study.tables(results, explicit={}))
    assert not missing, f"docs/latent.md lacks (run `python benchmarks/latent_study.py x --table`): {missing}"


def test_the_bound_against_k_tables_in_the_docs_are_the_committed_results() -> None:
    results = json.loads(bound_vs_k.RESULTS.read_text(encoding="utf-8"))
    missing = missing_from_doc(bound_vs_k.tables(results))
    assert not missing, f"docs/latent.md lacks (run `python benchmarks/bound_vs_k.py --table`): {missing}"


def test_committed_results_carry_no_path_of_the_machine_they_ran_on() -> None:
    """Results (benchmarks/) record paths relative to the repository, or a corpus by name and sha256: a home folder, a
    scratch folder or a checkout's location is nobody else's and says where, not what, was run."""
    machine_path = re.compile(r"""["'\s=](/(?:work|tmp|home|root|Users|mnt|opt|var)/[^"'\s]*)""")
    found = [
        f"{path.relative_to(REPO)}: {match}"
        for path in sorted((REPO / "benchmarks").rglob("*"))  # (docs/ shows commands, with example paths)
        if path.suffix in (".json", ".jsonl", ".md", ".csv") and path.is_file()
        for match in machine_path.findall(path.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found[:20])
