"""The package's shape: the layer table of DESIGN.md, checked on every import of ``src/cellweave``.

Every module is parsed with :mod:`ast` and *all* its imports are collected, including those inside
functions (a deferred import still makes the dependency: it only hides it from a quick read).
Imports of the package root's submodules (``from cellweave import io``) count as imports of that
submodule; any other name taken from the root (``from cellweave import CellWeave``) counts as an
import of the root facade.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


SRC = Path(__file__).resolve().parents[2] / "src" / "cellweave"
ROOT = "<root>"  # the package root's own names (cellweave/__init__.py)

#: Modules at the top of the package that every layer may use: exceptions, constants, atomic
#: writes, the data mirror/cache, the version, scores that train and bench share (``_metrics``: the kNN
#: rule of pretraining's monitor and of the panel). They import only each other (checked below).
CORE = frozenset({"_constants", "_exceptions", "_fetch", "_io_utils", "_metrics", "_system", "_version"})

#: Packages under every layer (besides CORE), which any package may import and which import only
#: CORE themselves. + modalities (not in DESIGN.md's layer table; its "where things go" table puts
#: one file per modality in modalities/): the modality registry, pure Python, asked by genes (key
#: prefixes and schemes), io (aliases), data (normalisation), nn (context lengths, presets),
#: models, tl and the command line (choices). It must sit below genes and nn, so it cannot live
#: in data/.
BASE = frozenset({"modalities"})

#: Which package may import which (besides CORE and BASE). DESIGN.md's table, with the differences
#: the code has good reason for marked "# + ...: why" (each is an import of a lower layer; none
#: makes a cycle).
LAYERS: dict[str, frozenset[str]] = {
    "modalities": frozenset(),  # pure Python: CORE only (see BASE)
    "genes": frozenset(),  # numpy, pandas; no torch
    "io": frozenset({"genes"}),
    "data": frozenset({"genes", "io"}),  # + io: data validates and splits modalities through io
    # + datasets (not in DESIGN.md's table): registered public datasets, pinned sources and converters;
    # the "bundled-data loaders" of the io/data row. Converters map symbols through genes.
    "datasets": frozenset({"genes", "io"}),
    "nn": frozenset(),  # torch only
    "models": frozenset({"nn", "data", "genes"}),
    # + genes, io: pretraining builds the vocabulary (genes.Vocabulary) and adaptation reads the
    # user's modalities (io.as_modalities); both are layers below data.
    "train": frozenset({"nn", "models", "data", "genes", "io"}),
    # + genes, io: lower layers (symbols for gene-level results, modality lookup);
    "tl": frozenset({"models", "train", "data", "genes", "io"}),
    "pl": frozenset({"models", "train", "data"}),
    # + train: tasks fine-tune (finetune_classifier, finetune_cross_modal, adapt, perturbation heads)
    #   as the user would; + pl: task figures; + datasets: registered datasets; + io, genes: lower
    #   layers; + nn: the panel's "untrained" variant builds a randomly initialised CellWeaveModule.
    "bench": frozenset({"tl", "models", "data", "train", "pl", "datasets", "io", "genes", "nn"}),
}
_BELOW_CLI = frozenset(LAYERS) | {ROOT}
#: Entry points on top: the command modules (_cli), the demo and cli.py itself. Nothing imports cli.
LAYERS.update({
    ROOT: frozenset({"models", "nn", "tl", "pl", "datasets", "genes", "io"}),  # a thin face: hands names on
    "_cli": _BELOW_CLI | {"demo"},  # + demo: `cellweave demo`'s command (_cli/demo.py) runs demo.run_demo
    "demo": _BELOW_CLI,
    "cli": _BELOW_CLI | {"_cli", "demo"},
})

#: Private imports across packages that remain; each says why. Keys: (importing module, imported module).
#: Everything else must go through a public name of the other package (its ``__init__``).
PRIVATE_ALLOWLIST: dict[tuple[str, str], str] = {
    # Empty: every package exports what the others use. Add an entry only with a comment saying why.
}


@dataclass(frozen=True)
class Import:
    module: str  # importing module, e.g. cellweave.tl._embed
    target: str  # imported module, e.g. cellweave.models (or "cellweave" for a root name)
    names: tuple[str, ...]  # names taken with ``from ... import``; () for ``import x``
    line: int
    nested: bool  # inside a function or class body

    def __str__(self) -> str:
        what = f"from {self.target} import {', '.join(self.names)}" if self.names else f"import {self.target}"
        return f"{self.module}:{self.line}: {what}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_submodule(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (SRC / rel).is_dir() or (SRC / rel).with_suffix(".py").is_file()


def _collect() -> list[Import]:
    found: list[Import] = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        nested_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                        ast.ClassDef)) for n in ast.walk(f)}
        for node in ast.walk(tree):
            nested = id(node) in nested_nodes
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "cellweave":
                        found.append(Import(module, alias.name, (), node.lineno, nested))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "cellweave":
                    continue
                names = tuple(a.name for a in node.names)
                # ``from cellweave.x import sub`` where sub is a module: an import of that module.
                subs = [n for n in names if _is_submodule(f"{target}.{n}")]
                for n in subs:
                    found.append(Import(module, f"{target}.{n}", (), node.lineno, nested))
                rest = tuple(n for n in names if n not in subs)
                if rest:
                    found.append(Import(module, target, rest, node.lineno, nested))
    return found


IMPORTS = _collect()


def _layer(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _edges() -> dict[tuple[str, str], list[Import]]:
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in IMPORTS:
        a, b = _layer(imp.module), _layer(imp.target)
        if a != b:
            edges[a, b].append(imp)
    return edges


def test_the_collector_sees_function_level_and_relative_imports() -> None:
    assert any(i.nested for i in IMPORTS), "imports inside functions must be collected"
    assert any(i.module == "cellweave.tl._embed" and i.target == "cellweave.models" for i in IMPORTS)
    assert any(i.module == "cellweave.models" and i.target == "cellweave.models._cellweave" for i in IMPORTS)
    layers = {_layer(_module_name(p)) for p in SRC.rglob("*.py")}
    unknown = layers - set(LAYERS) - CORE
    assert not unknown, f"modules outside the layer table: {sorted(unknown)}; add them to LAYERS (and DESIGN.md)"


def test_layer_table() -> None:
    bad = []
    for (a, b), imps in sorted(_edges().items()):
        if a in CORE:
            ok = b in CORE
        elif b in CORE:
            ok = True
        elif b in BASE:
            ok = a not in BASE  # BASE packages import CORE only
        else:
            ok = b in LAYERS[a]
        if not ok:
            bad += [f"{a} -> {b}: {i}" for i in imps]
    assert not bad, "imports against the layer table (tests/misc/test_layers.py LAYERS, DESIGN.md):\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    edges = _edges()
    for a, b in edges:
        graph[a].add(b)
    cycles = _cycles(graph)
    detail = [f"{' <-> '.join(c)}: " + "; ".join(str(i) for (a, b), imps in edges.items()
                                                 if a in c and b in c for i in imps) for c in cycles]
    assert not cycles, "import cycles between packages (function-level imports included):\n" + "\n".join(detail)


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_imports_cli() -> None:
    bad = [str(i) for i in IMPORTS if i.target == "cellweave.cli" or i.target.startswith("cellweave.cli.")]
    assert not bad, "cellweave.cli is the command line; nothing imports it:\n" + "\n".join(bad)


def test_nn_imports_no_anndata() -> None:
    banned = {"anndata", "mudata", "scanpy"}
    bad = []
    for path in sorted((SRC / "nn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            bad += [f"{path.relative_to(SRC)}:{node.lineno}: {t}" for t in tops if t in banned]
    assert not bad, "cellweave.nn is pure torch (no AnnData):\n" + "\n".join(bad)


def _private_across(imp: Import) -> bool:
    """An import that reaches into another package's private module or name (CORE excepted)."""
    a, b = _layer(imp.module), _layer(imp.target)
    if a == b or b in CORE or b == ROOT or (a, b) == ("cli", "_cli"):  # _cli holds cli.py's own commands
        return False
    private_module = any(p.startswith("_") for p in imp.target.split(".")[1:])
    private_name = any(n.startswith("_") and not n.startswith("__") for n in imp.names)
    return private_module or private_name


def test_bench_tasks_import_only_public_names() -> None:
    bad = [str(i) for i in IMPORTS
           if i.module.startswith("cellweave.bench.tasks.") and _private_across(i)
           and (i.module, i.target) not in PRIVATE_ALLOWLIST]
    assert not bad, ("bench/tasks use public cellweave names only (export the name from the package's "
                     "__init__):\n" + "\n".join(bad))
    # The tasks may not sit on the allowlist for anything but what another engineer still has to export.
    listed = [k for k in PRIVATE_ALLOWLIST if k[0].startswith("cellweave.bench.tasks.")]
    assert listed == []


def test_no_private_imports_across_packages_beyond_the_allowlist() -> None:
    found = {(i.module, i.target): i for i in IMPORTS if _private_across(i)}
    bad = [str(i) for k, i in found.items() if k not in PRIVATE_ALLOWLIST]
    assert not bad, ("private imports across packages (export a public name from the package's __init__, "
                     "or add a commented PRIVATE_ALLOWLIST entry):\n" + "\n".join(bad))
    stale = [k for k in PRIVATE_ALLOWLIST if k not in found]
    assert not stale, f"allowlist entries no longer needed, remove them: {stale}"


def test_nothing_imports_the_package_root_from_inside() -> None:
    """Names of the root facade (``from cellweave import CellWeave``) are for users and entry points."""
    bad = [str(i) for i in IMPORTS if _layer(i.target) == ROOT and i.names
           and _layer(i.module) not in {"cli", "_cli", "demo", ROOT}]
    assert not bad, "import from the package that defines the name, not the root:\n" + "\n".join(bad)


def test_core_modules_import_only_core() -> None:
    bad = [str(i) for i in IMPORTS if _layer(i.module) in CORE and _layer(i.target) not in CORE]
    assert not bad, "\n".join(bad)


# --- package code never reads the repository's own folders -------------------------------------

def _parent_steps(node: ast.AST, parents: dict[int, ast.AST]) -> int:
    """How many folders up from ``__file__`` the expression around ``node`` goes."""
    steps = 0
    cur = node
    while id(cur) in parents:
        up = parents[id(cur)]
        if isinstance(up, ast.Attribute) and up.attr == "parent":
            steps += 1
        elif isinstance(up, ast.Subscript) and isinstance(up.value, ast.Attribute) and up.value.attr == "parents":
            if not (isinstance(up.slice, ast.Constant) and isinstance(up.slice.value, int)):
                return 99  # a computed climb: treat as leaving the package
            steps += up.slice.value + 1
        elif isinstance(up, ast.Call) and isinstance(up.func, ast.Attribute) and up.func.attr == "dirname":
            steps += 1
        elif not (isinstance(up, ast.Call) or (isinstance(up, ast.Attribute) and up.attr in {"resolve", "absolute",
                                                                                            "parents"})):
            break
        cur = up
    return steps


def test_package_code_does_not_climb_out_of_the_package() -> None:
    """``Path(__file__).parents[k]`` above src/cellweave finds the repository's data/ or benchmarks/ in a
    checkout and nothing in an installed wheel: ship the file as package data or take a path."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "__file__":
                steps = _parent_steps(node, parents)
                folder = path.parents[steps - 1] if 0 < steps <= len(path.parents) else path
                if steps > len(path.parents) or not folder.is_relative_to(SRC):
                    bad.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {steps} folder(s) up from __file__")
    assert not bad, "package code reads outside the package:\n" + "\n".join(bad)


def test_climb_detector() -> None:
    def steps(src: str) -> int:
        tree = ast.parse(src)
        parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        name = next(n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "__file__")
        return _parent_steps(name, parents)

    assert steps("Path(__file__).parent / 'pretrained'") == 1
    assert steps("Path(__file__).resolve().parents[4] / 'benchmarks'") == 5
    assert steps("os.path.dirname(os.path.dirname(__file__))") == 2

