"""The shape of the code: imports go one way (no cycles, no arrow back up the layers), and no
function is longer than a screen. Read from the source with ``ast``, imports inside functions
included."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "wdlab"
MAX_FUNCTION_LINES = 80

# Layers, top to bottom: a module may import only modules of a lower layer (or of its own
# package, without cycles). CLI → pipelines → (executors, store, report, config) → trainer →
# (models, data) → engines → (cnn, func) → (records, decay) and the leaves under them.
LAYERS = [
    {"wdlab", "wdlab.__main__"},
    {"wdlab.cli"},
    {"wdlab.pipelines", "wdlab.integrations"},
    {"wdlab.verify", "wdlab.auditing"},
    {"wdlab.executors", "wdlab.store", "wdlab.report", "wdlab.config"},
    {"wdlab.trainer", "wdlab.selection"},
    {"wdlab.timescale", "wdlab.diagnostics"},
    {"wdlab.models", "wdlab.data"},
    {"wdlab.engines"},
    {"wdlab.cnn", "wdlab.func"},
    {"wdlab.records"},
    {"wdlab.decay"},
    {
        "wdlab.optimizers",
        "wdlab.tasks",
        "wdlab.jsonsafe",
        "wdlab.version",
        "wdlab.extras",
        "wdlab.devices",
        "wdlab.loading",
    },
]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The wdlab modules ``path`` imports (``from wdlab.x import y`` is wdlab.x.y when that is
    a module, else wdlab.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("wdlab")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wdlab"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found & known


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def place(module: str) -> tuple[int, str]:
    """(layer index, the LAYERS entry) of a module: the longest entry it is or lies under."""
    found = [
        (len(top), i, top)
        for i, layer in enumerate(LAYERS)
        for top in layer
        if module == top or (module.startswith(top + ".") and top != "wdlab")
    ]
    if not found:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    _, i, top = max(found)
    return i, top


def test_every_module_has_a_layer():
    for name in modules():
        place(name)


def test_imports_go_down_the_layers():
    """Each import goes to a lower layer, or stays inside its own package (siblings of one
    layer, e.g. the store and the report, do not import each other)."""
    back = []
    for mod, deps in graph().items():
        (i, top) = place(mod)
        for dep in deps:
            (j, dep_top) = place(dep)
            if j < i or (j == i and dep_top != top):
                back.append(f"{mod} -> {dep}")
    assert back == [], "imports running back up the layers:\n" + "\n".join(sorted(back))


def test_no_import_cycles():
    g = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_functions_fit_on_a_screen(path):
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
