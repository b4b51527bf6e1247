"""The threat model is the architecture: attacks and defenses never import each other."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("pkg,forbidden", [("attacks", "defenses"), ("defenses", "attacks")])
def test_no_cross_imports(pkg, forbidden):
    files = sorted((REPO / pkg).glob("*.py"))
    assert files
    offenders = [f.name for f in files if forbidden in imported_modules(f)]
    assert not offenders, f"{pkg} modules import {forbidden}: {offenders}"


def test_report_reads_records_not_models():
    for name in ("report.py", "check.py", "baseline.py"):
        mods = imported_modules(REPO / "bench" / name)
        assert not mods & {"defenses", "attacks", "torch"}, (name, mods & {"defenses", "attacks", "torch"})
