"""Kill rate of one module's mutants after ``mutmut run`` (``make mutants``).

Usage: ``python bench/mutant_score.py proxy.qwen.envelope [--list]``. Reads mutmut 3's
``mutants/<path>.meta`` and prints ``module killed/total kill-rate`` plus the surviving mutants
(``--list``). A mutant counts as caught when a test failed (killed) or the tests timed out;
it is *excluded* from the rate when its only change is the text of a message: a string literal
inside the message argument of an exception or a log call, or a sentence-like literal (three
words or more) that is neither compared with anything nor a regular expression (mutants that
only change message wording). Survivors and exclusions are listed by name, so
``mutmut show <name>`` shows each.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

CAUGHT = {1, 3, 36, 24, -24, 152, 255, 37}
SURVIVED = {0}
_MESSAGE_CALLS = ("Error", "error", "Exception", "warning", "info", "debug", "exception")


def _functions(source: str) -> dict[str, ast.AST]:
    """Every top-level function and method of mutmut's mutated file, by name."""
    out: dict[str, ast.AST] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out[node.name] = node
    return out


def _message_strings(fn: ast.AST) -> set[int]:
    """``id``s of string constants that are message text: (part of) the message argument of
    an exception or log call, or a sentence (three words or more) that is not compared with
    anything and not a regular expression."""
    ids: set[int] = set()
    not_text: set[int] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare):
            for sub in [node.left, *node.comparators]:
                for c in ast.walk(sub):
                    not_text.add(id(c))
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("compile", "search", "match", "sub", "findall", "finditer"):
                for c in ast.walk(node):
                    not_text.add(id(c))
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.count(" ") >= 2
            and id(node) not in not_text
        ):
            ids.add(id(node))
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if not name.endswith(_MESSAGE_CALLS):
            continue
        for arg in node.args[:1]:
            for sub in ast.walk(arg):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    ids.add(id(sub))
    return ids


def _only_message_changed(orig: ast.AST, mutant: ast.AST) -> bool:
    """True when ``mutant`` differs from ``orig`` only in message string constants."""
    messages = _message_strings(orig)
    a_nodes = list(ast.walk(orig))
    b_nodes = list(ast.walk(mutant))
    if len(a_nodes) != len(b_nodes):
        return False
    changed = False
    for a, b in zip(a_nodes, b_nodes, strict=True):
        if type(a) is not type(b):
            return False
        if isinstance(a, ast.Constant):
            assert isinstance(b, ast.Constant)
            if a.value != b.value:
                if id(a) not in messages:
                    return False
                changed = True
        elif isinstance(a, ast.Name | ast.Attribute | ast.arg | ast.keyword):
            fields = ("id", "attr", "arg")
            if any(getattr(a, f, None) != getattr(b, f, None) for f in fields):
                return False
        elif isinstance(a, ast.operator | ast.cmpop | ast.boolop | ast.unaryop):
            if type(a) is not type(b):
                return False
    return changed


def score(module: str) -> tuple[int, int, list[str], list[str]]:
    """``(caught, counted, survivors, excluded)`` for ``module`` (dotted name)."""
    path = Path("mutants") / (module.replace(".", "/") + ".py")
    meta = json.loads(path.with_suffix(".py.meta").read_text())
    codes: dict[str, int | None] = meta["exit_code_by_key"]
    funcs = _functions(path.read_text())
    caught, counted = 0, 0
    survivors: list[str] = []
    excluded: list[str] = []
    for key, code in sorted(codes.items()):
        fn_name = key.rsplit(".", 1)[-1]
        orig_name = fn_name.split("__mutmut_")[0] + "__mutmut_orig"
        mutant, orig = funcs.get(fn_name), funcs.get(orig_name)
        if orig is not None and mutant is not None:
            # compare bodies only (the names differ)
            if _only_message_changed(
                ast.Module(body=list(orig.body), type_ignores=[]),  # type: ignore[attr-defined]
                ast.Module(body=list(mutant.body), type_ignores=[]),  # type: ignore[attr-defined]
            ):
                excluded.append(key)
                continue
        counted += 1
        if code in CAUGHT:
            caught += 1
        elif code in SURVIVED or code is None:
            survivors.append(key)
        else:
            survivors.append(key)
    return caught, counted, survivors, excluded


def main(argv: list[str]) -> int:
    module = argv[0]
    caught, counted, survivors, excluded = score(module)
    rate = 100.0 * caught / counted if counted else 100.0
    print(
        f"{module}: {caught}/{counted} caught = {rate:.1f} % "
        f"({len(excluded)} message-wording mutants excluded)"
    )
    if "--list" in argv:
        for name in survivors:
            print("  survived:", name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
