"""The import graph of kseg/ and apps/ flows one way (docs/architecture.md).

Every module under ``kseg/`` and ``apps/`` is parsed with ``ast``; every import counts, also
those inside functions. Each module belongs to one layer (``LAYERS``, lowest first) and may
import its own layer and the layers below it, with these narrower rules:

- ``apps`` import only the base and the runtime (frame in, mask out: no training code);
- the runtime imports Keras, TensorFlow and the data/models layers only inside functions (for
  ``.keras`` files), so that importing it, and running a ``.tflite`` file, loads neither;
- only ``kseg.cli`` (and ``python -m kseg``) imports ``kseg.cli``;
- under ``kseg/`` only ``kseg.cli.demo`` imports ``apps``: ``apps.demo``, inside a function;
- no cycle between packages (``kseg.X`` / ``apps.X``, the second dotted component).

A failure names the module, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (layer, module prefixes), lowest first. A prefix matches the module and its submodules;
# "kseg" alone (the package's __init__: __version__ and a lazy kseg.Segmenter) matches only itself.
LAYERS = [
    ("base", ("kseg.errors", "kseg.paths", "kseg.config", "kseg.progress", "kseg._vendor", "kseg._faults")),
    ("data", ("kseg.data",)),
    ("models", ("kseg.models", "kseg.ops", "kseg.losses", "kseg.metrics", "kseg.metrics_saliency",
                "kseg.metrics_panoptic")),
    ("train", ("kseg.train", "kseg.distribute")),
    ("runtime", ("kseg.runtime", "kseg.metadata", "kseg")),
    ("tools", ("kseg.quantize", "kseg.export", "kseg.export_instances", "kseg.evaluate", "kseg.evaluate_instances",
               "kseg.evaluate_panoptic", "kseg.benchmark", "kseg.distill", "kseg.calibrate", "kseg.recover")),
    ("apps", ("apps",)),
    ("cli", ("kseg.cli", "kseg.__main__")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
APPS_MAY_IMPORT = {"base", "runtime", "apps"}
RUNTIME_TOP_LEVEL = {"base", "runtime"}  # what the runtime may import when it is imported
HEAVY = ("keras", "tensorflow", "tf_keras", "tensorflow_model_optimization")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    files = sorted((REPO / "kseg").rglob("*.py")) + sorted((REPO / "apps").rglob("*.py"))
    return {module_name(f): f for f in files}


def layer_of(name: str) -> str | None:
    best = None
    for layer, prefixes in LAYERS:
        for p in prefixes:
            hit = name == p if p == "kseg" else (name == p or name.startswith(p + "."))
            if hit and (best is None or len(p) > len(best[1])):
                best = (layer, p)
    return best[0] if best else None


def unit_of(name: str) -> str:
    """The package a module belongs to for the cycle check: ``kseg.X`` / ``apps.X`` (or the root)."""
    return ".".join(name.split(".")[:2])


class _Imports(ast.NodeVisitor):
    """``(line, target, in_function)`` for every import; ``from a import b`` is ``a.b`` when that is a module."""

    def __init__(self, name: str, is_package: bool, known: set[str]):
        self.package = name if is_package else name.rpartition(".")[0]
        self.known = known
        self.depth = 0
        self.found: list[tuple[int, str, bool]] = []

    def _func(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _func

    def visit_Import(self, node):
        for a in node.names:
            self.found.append((node.lineno, a.name, self.depth > 0))

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:
            pkg = self.package.split(".")
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        for a in node.names:
            sub = f"{base}.{a.name}"
            self.found.append((node.lineno, sub if sub in self.known else base, self.depth > 0))


def imports() -> list[tuple[str, int, str, bool]]:
    """``(module, line, imported module, inside a function)`` for every import under kseg/ and apps/."""
    mods = modules()
    known = set(mods)
    out = []
    for name, path in mods.items():
        v = _Imports(name, path.name == "__init__.py", known)
        v.visit(ast.parse(path.read_text(), str(path)))
        out += [(name, line, target, in_func) for line, target, in_func in v.found]
    return out


def _where(mod, line, target, in_func):
    return f"{mod} (line {line}) imports {target}{' inside a function' if in_func else ''}"


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer_of(m) is None]
    assert not missing, f"modules without a layer (add them to LAYERS in tests/test_layering.py): {missing}"


def test_no_module_imports_a_layer_above_it():
    bad = []
    for mod, line, target, in_func in imports():
        top = target.split(".")[0]
        src = layer_of(mod)
        if top not in ("kseg", "apps"):
            if src == "runtime" and not in_func and top in HEAVY:
                bad.append(_where(mod, line, target, in_func) + ": the runtime loads Keras/TensorFlow only inside functions")
            continue
        dst = layer_of(target)
        if src is None or dst is None:
            continue  # test_every_module_has_a_layer reports it
        if mod.startswith("kseg") and top == "apps":
            if mod != "kseg.cli.demo" or target != "apps.demo" or not in_func:
                bad.append(_where(mod, line, target, in_func) + ": only kseg.cli.demo imports apps "
                           "(apps.demo, inside its function)")
            continue
        if dst == "cli" and src != "cli":
            bad.append(_where(mod, line, target, in_func) + ": only the CLI imports kseg.cli")
        elif RANK[dst] > RANK[src]:
            bad.append(_where(mod, line, target, in_func) + f": layer {dst} is above {src}")
        elif src == "apps" and dst not in APPS_MAY_IMPORT:
            bad.append(_where(mod, line, target, in_func) + f": apps import only {sorted(APPS_MAY_IMPORT)}, not {dst}")
        elif src == "runtime" and not in_func and dst not in RUNTIME_TOP_LEVEL:
            bad.append(_where(mod, line, target, in_func) + f": the runtime imports the {dst} layer only inside "
                       "functions (importing kseg.runtime loads no Keras/TensorFlow)")
    bad = list(dict.fromkeys(bad))  # `from x import a, b` is one import
    assert not bad, "upward or forbidden imports:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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


def test_no_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    why: dict[tuple[str, str], str] = {}
    for mod, line, target, in_func in imports():
        if target.split(".")[0] not in ("kseg", "apps"):
            continue
        a, b = unit_of(mod), unit_of(target)
        if a != b:
            edges.setdefault(a, set()).add(b)
            why.setdefault((a, b), _where(mod, line, target, in_func))
    msgs = []
    for comp in _cycles(edges):
        path = _cycle_through(edges, comp)
        links = [why[(a, b)] for a, b in zip(path, path[1:])]
        msgs.append(f"cycle {' -> '.join(path)} (packages {', '.join(comp)} depend on each other): " + "; ".join(links))
    assert not msgs, "\n".join(msgs)


def _cycle_through(edges: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest path from ``comp[0]`` back to itself inside the strongly connected ``comp``."""
    start, inside = comp[0], set(comp)
    prev, queue = {}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if w in inside and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def test_the_checker_sees_function_level_and_relative_imports():
    src = "import kseg.errors\ndef f():\n    from kseg.cli import main\nfrom . import readers\n"
    v = _Imports("kseg.data.check", False, {"kseg.data.readers"})
    v.visit(ast.parse(src))
    assert v.found == [(1, "kseg.errors", False), (3, "kseg.cli", True), (4, "kseg.data.readers", False)]
    assert layer_of("kseg") == "runtime" and layer_of("kseg.cli.export") == "cli"
    assert layer_of("kseg.export_instances") == "tools" and layer_of("kseg.data.readers.coco") == "data"
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]] and _cycle_through(edges, ["a", "b", "c"]) == ["a", "b", "c", "a"]
