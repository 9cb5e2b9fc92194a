"""Structure rules that keep one home per concept (README "Design")."""

from __future__ import annotations

import ast
from pathlib import Path

from vpr_ros.rerank import reranker_names

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "vpr_ros"


def _named(node: ast.AST, names: set[str]) -> bool:
    """A string constant in ``names``, or a tuple / list / set holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_named(e, names) for e in node.elts)
    return False


def _name_checks(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines that compare something with a re-ranker name (==, !=, in, match, startswith)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(_named(n, names) for n in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _named(node.value, names):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
            and any(_named(a, names) for a in node.args)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_reranker_name_is_checked_outside_the_rerank_package():
    """A new re-ranker is one module and one registry row: no if-chain on names elsewhere."""
    names = set(reranker_names())
    files = [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "rerank") not in p.parents]
    files += sorted((REPO_ROOT / "launch").glob("*.py"))
    found = []
    for path in files:
        for line in _name_checks(ast.parse(path.read_text(), str(path)), names):
            found.append(f"{path.relative_to(REPO_ROOT)}:{line}")
    assert not found, "re-ranker name checks belong in the re-ranker's spec: " + ", ".join(found)


def test_the_scan_sees_each_kind_of_name_check():
    names = {"pairvpr", "none"}
    code = """
a == "pairvpr"
b != "none"
c in ("x", "pairvpr")
model.startswith("pairvpr")
match d:
    case "none":
        pass
e == "image"
"""
    assert _name_checks(ast.parse(code), names) == [2, 3, 4, 5, 7]
