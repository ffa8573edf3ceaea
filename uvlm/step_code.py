"""The package code each step runs, found by following its imports (so it is never listed by hand).

A step's code is its `cmd_*` function's module, the modules that function imports, and everything those
import in turn (every import in a module counts, also those inside functions: a superset of what one
run loads, so a change can only cause a rerun too many, never a stale result). Package __init__ files
on the way count too: Python runs them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from uvlm.steps import STEPS, function_path

REPO = Path(__file__).resolve().parent.parent


def module_file(name: str) -> Path | None:
    """The repository file of a `uvlm...` module, or None for anything else."""
    if name != "uvlm" and not name.startswith("uvlm."):
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports_in(node: ast.AST, package: str) -> set[str]:
    """Module names imported anywhere under `node` (relative imports resolved against `package`)."""
    names: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parent = package.split(".")[: len(package.split(".")) - n.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names |= {base} | {f"{base}.{a.name}" for a in n.names}
    return names


@cache
def _module_imports(name: str) -> frozenset[str]:
    path = module_file(name)
    if path is None:
        return frozenset()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return frozenset(m for m in imports_in(ast.parse(path.read_text()), package) if module_file(m))


def _with_packages(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def modules_of(roots: set[str]) -> set[str]:
    """Every uvlm module reachable from `roots` through imports (the roots and their packages included)."""
    seen: set[str] = set()
    todo = [m for r in roots for m in _with_packages(r) if module_file(m)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [m for i in _module_imports(name) for m in _with_packages(i) if module_file(m) and m not in seen]
    return seen


def step_modules(step: str) -> set[str]:
    """The modules step `step` can run: its function's module-level and own imports, followed."""
    module, function = function_path(step)
    tree = ast.parse(module_file(module).read_text())
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function), None)
    if fn is None:
        raise LookupError(f"step {step}: no function {function} in {module}")
    top = {m for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom) for m in imports_in(n, module)}
    return modules_of({module} | {m for m in top | imports_in(fn, module) if module_file(m)})


def step_files(step: str) -> set[str]:
    """Repository-relative paths of the files of `step_modules`."""
    return {module_file(m).relative_to(REPO).as_posix() for m in step_modules(step)}


def phase_files(phase: str) -> set[str]:
    return set().union(*(step_files(s) for s, st in STEPS.items() if st.phase == phase))


def compress(files: set[str]) -> list[str]:
    """Paths as DVC deps: a folder when every .py file under it is in `files`, else the files."""
    out: set[str] = set()
    for f in files:
        path = Path(f)
        best = f
        for parent in path.parents:
            if parent == Path("uvlm") or parent == Path("."):
                break
            under = {p.relative_to(REPO).as_posix() for p in (REPO / parent).rglob("*.py")}
            if under <= files:
                best = parent.as_posix()
        out.add(best)
    return sorted(out)
