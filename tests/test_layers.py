"""The package's one dependency rule, read from the source (an `ast` walk, function-level imports included).

Layers, lowest first: core → train/ and deploy/ → stages/ → experiments/ → cli/. A module imports only its own
layer and the layers below; deploy/ imports only core (not train/), train/ not deploy/; no import circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = {"cli": 4, "experiments": 3, "stages": 2, "train": 1, "deploy": 1}  # everything else is core (0)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that `path` (module `name`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from . import x`: a module
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of an attribute: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
        if isinstance(node, ast.ImportFrom) and targets[0].startswith("distilkit") and targets[0] not in modules:
            found.add(f"missing:{targets[0]}")  # an import of a module that does not exist
    return found


def import_graph(root: Path, package: str = "distilkit") -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


def layer_of(module: str) -> tuple[int, str]:
    part = module.split(".")[1] if module.count(".") else ""
    return LAYERS.get(part, 0), part if part in LAYERS else "core"


def rule_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        level, area = layer_of(module)
        for target in sorted(t for t in targets if not t.startswith("missing:")):
            t_level, t_area = layer_of(target)
            if t_level > level or (t_level == level and t_area != area):
                bad.append(f"{module} ({area}) imports {target} ({t_area})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (import circles)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_layer_imports_only_layers_below_it():
    graph = import_graph(SRC)
    assert len(graph) > 20 and any(graph.values()), "the walk found no modules or no imports"
    assert rule_violations(graph) == []


def test_every_import_of_the_package_names_one_of_its_modules():
    missing = {m: sorted(t for t in ts if t.startswith("missing:")) for m, ts in import_graph(SRC).items()}
    assert {m: ts for m, ts in missing.items() if ts} == {}


def test_no_import_circles():
    assert cycles(import_graph(SRC)) == []


def test_the_rule_catches_an_import_from_deploy_into_train_and_a_circle(tmp_path):
    pkg = tmp_path / "distilkit"
    for folder in ("deploy", "train"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text("import distilkit.metrics\n")
    (pkg / "metrics.py").write_text("def f():\n    from . import losses\n")  # function level, relative
    (pkg / "train" / "common.py").write_text("from ..losses import x\n")
    (pkg / "deploy" / "backends.py").write_text("def load():\n    from ..train.common import model_inputs\n")
    graph = import_graph(tmp_path)
    assert rule_violations(graph) == ["distilkit.deploy.backends (deploy) imports distilkit.train.common (train)"]
    assert cycles(graph) == [["distilkit.losses", "distilkit.metrics"]]
