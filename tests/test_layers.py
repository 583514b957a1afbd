"""Imports between modules of ``imret/`` run from the top of the pipeline down, with no
cycles; imports inside functions count as much as those at the top of a file."""
import ast
import os

import imret

ROOT = os.path.dirname(imret.__file__)

# Top first. A module belongs to the layer of the longest name here it starts with.
LAYERS = [
    ("imret", "imret.__main__", "imret.cli", "imret.service", "imret.engines",
     "imret.local.commands"),  # what the local-feature subcommands do: they open index files
    ("imret.index", "imret.evaluation", "imret.training",
     "imret.local.train",  # training of the attention network: on the training layer's data and bank
     "imret.rerank.multiview"),  # a multi-view evaluation set, built from evaluation's photo set
    ("imret.local", "imret.rerank"),
    ("imret.extractor",),
    ("imret.heads", "imret.backbones"),
    ("imret.config", "imret.presets", "imret.io", "imret.descriptor", "imret.errors"),
    ("imret.core",),
]


def _layer(module: str) -> int:
    best, level = "", None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, level = name, len(LAYERS) - i
    assert level is not None, f"{module} is in no layer of LAYERS"
    return level


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(module: str, path: str, known: set[str]) -> set[str]:
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "imret")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "imret":
                continue
            for a in node.names:  # 'from pkg import mod' imports the module mod
                sub = f"{target}.{a.name}"
                found.add(sub if sub in known else target)
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def test_imports_run_down_the_layers():
    wrong = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
             for m, targets in sorted(_graph().items()) for t in sorted(targets) if _layer(t) > _layer(m)]
    assert not wrong, "\n".join(wrong)


def test_the_core_imports_nothing_else_of_imret():
    graph = _graph()
    wrong = [f"{m} imports {t}" for m, ts in graph.items() if m.startswith("imret.core")
             for t in ts if not t.startswith("imret.core")]
    assert not wrong, wrong


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" → ".join(stack[stack.index(t):] + [t]))
            elif t in graph and not state.get(t):
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [])
    assert not cycles, "\n".join(cycles)


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from ..index.store import Index\n    from . import extract\n")
    assert _imports("imret.local.m", str(f), {"imret.local.extract"}) == {"imret.index.store", "imret.local.extract"}
