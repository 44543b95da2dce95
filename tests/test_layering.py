"""Imports go one way: base helpers -> knowledge -> data -> model -> session -> train / inference
-> evaluate -> demo / ablate -> chat / app -> commands -> cli. Every `import` in the package counts,
including those inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import geostrata

PACKAGE = Path(geostrata.__file__).parent

# Rank of each top-level module or subpackage: a module may import only lower ranks or its own
# subpackage; two parts of equal rank (train, inference) must not import each other.
LAYERS: dict[str, int] = {
    "errors": 0,
    "textio": 1,
    "atomic": 1,
    "weights": 1,
    "device": 1,
    "levels": 1,
    "lazy": 1,
    "boxes": 1,
    "bands": 1,
    "knowledge": 2,
    "prompts": 2,
    "data": 3,
    "model": 4,
    "session": 5,
    "train": 6,
    "inference": 6,
    "evaluate": 7,
    "scaling": 7,
    "predict": 7,
    "overlay": 7,
    "mapping": 7,
    "demo": 8,
    "scene_study": 8,
    "ablate": 9,
    "chat": 10,
    "app": 11,
    "api": 11,
    "commands": 12,
    "cli": 13,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "geostrata" or n.startswith("geostrata."))
    return found


def import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        src = _part(module)
        for target in targets:
            dst = _part(target)
            if not src or src == dst:
                continue
            if src not in LAYERS or dst not in LAYERS:
                bad.append(f"{module} -> {target}: part missing from LAYERS")
            elif LAYERS[dst] >= LAYERS[src]:
                bad.append(f"{module} -> {target} ({src} rank {LAYERS[src]}, {dst} {LAYERS[dst]})")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Module-level import cycles (depth-first search, one cycle reported per back edge)."""
    found, state = [], defaultdict(int)  # 0 new, 1 on the stack, 2 done

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            if state[target] == 1:
                found.append([*stack[stack.index(target) :], target])
            elif state[target] == 0:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if state[module] == 0:
            visit(module, [module])
    return found


def test_every_part_has_a_layer():
    parts = {_part(m) for m in import_graph()} - {""}
    assert parts <= set(LAYERS), f"add to LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_upward_or_sideways_import():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_checker_catches_an_upward_import_and_a_cycle():
    graph = {
        "geostrata.model.x": {"geostrata.train.loop"},
        "geostrata.train.loop": {"geostrata.model.x"},
        "geostrata.inference": {"geostrata.train.loop"},
    }
    bad = upward_imports(graph)
    assert any(b.startswith("geostrata.model.x -> geostrata.train.loop") for b in bad)
    assert any(b.startswith("geostrata.inference -> geostrata.train.loop") for b in bad)
    assert [set(c) for c in cycles(graph)] == [{"geostrata.model.x", "geostrata.train.loop"}]
