"""Arrows point inward: fundraising -> campaigns, receipts -> ledger; never the other way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "ledger": {"flask", "flask_sqlalchemy", "fundraising", "campaigns", "receipts"},
    "campaigns": {"flask", "flask_sqlalchemy", "fundraising", "receipts"},
    "receipts": {"flask", "flask_sqlalchemy", "fundraising", "campaigns"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_inner_packages_do_not_import_outer_ones(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_itself_sees_imports():
    sample = ROOT / "fundraising" / "cli.py"
    assert "flask" in imported_top_levels(sample)


def test_no_float_in_money_code():
    hits = []
    for package in ("ledger", "campaigns"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            hits += [f"{path.name}:{n.lineno}" for n in ast.walk(tree)
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "float"]
    assert hits == []
