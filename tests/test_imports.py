"""The package's shape: no import cycle anywhere, no module importing another module's private name,
and every module importable on its own in a fresh interpreter.

The import graph is read from the source (every ``import`` statement, also those inside functions):
an edge A -> B for each paramlab module B that A imports, plus A -> P for each package P whose
``__init__`` that import runs (a package above B that does not contain A). A cycle in it is a
design cycle even where lazy imports keep Python from tripping over it today.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import paramlab

ROOT = Path(paramlab.__file__).resolve().parent
PACKAGE = "paramlab"


def module_files() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE,) + path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _owner(name: str) -> str | None:
    """The paramlab module a dotted name lives in (the name itself, or the module above an attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, source: str | None = None):
    """(target module, imported attribute or None, line) for every paramlab import in module `name`
    (its file, or `source` as if it were its text)."""
    tree = ast.parse(MODULES[name].read_text() if source is None else source, filename=str(MODULES[name]))
    bound = {}  # local name -> paramlab module it is bound to (for `module._private` attribute reads)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE:
                    out.append((_owner(a.name), None, node.lineno))
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else PACKAGE
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name).split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                full = f"{source}.{a.name}"
                if full in MODULES:  # `from pkg import module`
                    out.append((full, None, node.lineno))
                    bound[a.asname or a.name] = full
                else:
                    out.append((_owner(source), a.name, node.lineno))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and _owner(bound[node.value.id]) in MODULES):
            out.append((_owner(bound[node.value.id]), node.attr, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    edges = {m: set() for m in MODULES}
    for m in MODULES:
        mine = {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 2)} | {_package_of(m)}
        for target, _, _ in imports(m):
            if target is None or target == m:
                continue
            edges[m].add(target)
            parts = target.split(".")
            for i in range(1, len(parts)):  # packages whose __init__ this import runs
                pkg = ".".join(parts[:i])
                if pkg not in mine and pkg in MODULES:
                    edges[m].add(pkg)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_what_it_must():
    """A check that cannot fail is no check: the reader finds real edges, a planted cycle and a
    planted private import."""
    edges = graph()
    assert "paramlab.sweep" in edges["paramlab.kit.experiment"]  # a lazy import inside a function
    assert "paramlab.measure" in edges["paramlab.report"]  # report -> measure.fit runs measure/__init__
    assert cycles({**edges, "paramlab.store": edges["paramlab.store"] | {"paramlab.tracking"}})
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert ("paramlab.io", "write_json_atomic") in {(t, n) for t, n, _ in imports("paramlab.tracking")}
    planted = "from .store import _DEFAULT_GROUPS\n\ndef f():\n    from . import schemes\n    return schemes._SGD_CLASSES\n"
    found = {(t, n) for t, n, _ in imports("paramlab.tracking", planted)}
    assert {("paramlab.store", "_DEFAULT_GROUPS"), ("paramlab.schemes", "_SGD_CLASSES")} <= found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_another_module_s_private_name():
    bad = [f"{m}:{line} uses {target}.{name}" for m in MODULES for target, name, line in imports(m)
           if name and name.startswith("_") and not name.startswith("__") and target != m]
    assert bad == [], "make these public in their module (one public home per shared rule):\n" + "\n".join(bad)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks one child per module")
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """One fresh interpreter; torch and numpy are imported first (shared, they are not paramlab's),
    then each paramlab module (but the ``python -m paramlab`` entry point) is imported in a forked
    child that has imported nothing of paramlab."""
    script = f"""
import importlib, os, sys, traceback
import numpy, torch
bad = []
for name in {sorted(m for m in MODULES if not m.endswith("__main__"))!r}:  # __main__ runs the CLI
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        bad.append(name)
print("FAILED:", bad)
sys.exit(1 if bad else 0)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_the_io_leaf_imports_nothing_of_paramlab():
    """Files written whole and JSON are the floor every writer stands on (store, checkpoints, dataset caches)."""
    assert graph()["paramlab.io"] == set()
    assert "paramlab.store" not in graph()["paramlab.checkpoint"] | graph()["paramlab.data.mnist1d"]
