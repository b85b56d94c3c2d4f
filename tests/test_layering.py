"""Imports point one way: no cycle between modules and no import from a lower layer to a higher one.

The package's imports are read with `ast` (imports inside functions included), so a lazy import
cannot hide an upward dependency. A module may import its own layer or any lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "rejepa_jax"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Module or package (longest prefix wins) -> layer. Lowest first.
LAYERS: dict[str, int] = {
    # 0: leaves, importing only each other.
    PACKAGE: 0,  # The package's own __init__ (a docstring and the XLA CPU defaults).
    f"{PACKAGE}.config_lib": 0,
    f"{PACKAGE}.runlocal": 0,
    f"{PACKAGE}.recipes": 0,
    f"{PACKAGE}.models": 0,
    f"{PACKAGE}.data": 0,
    f"{PACKAGE}.masking": 0,
    f"{PACKAGE}.objective": 0,
    # sharding imports nothing of the package, and the models constrain activations with it
    # (`constrain_batch`), so it sits with the leaves rather than with state and checkpoint.
    f"{PACKAGE}.sharding": 0,
    f"{PACKAGE}.metric_writer": 0,
    f"{PACKAGE}.progress": 0,
    f"{PACKAGE}.profiling": 0,
    f"{PACKAGE}.preemption": 0,
    f"{PACKAGE}.distributed": 0,
    f"{PACKAGE}.cli": 0,
    f"{PACKAGE}.sample_data": 0,
    f"{PACKAGE}.xla_cpu_flags": 0,
    # 1: the train state, the optimizer and the checkpoint files.
    f"{PACKAGE}.state": 1,
    f"{PACKAGE}.optim": 1,
    f"{PACKAGE}.checkpoint": 1,
    # 2: what a run builds from its config, one update, and the read-only restore of an encoder.
    f"{PACKAGE}.run_setup": 2,
    f"{PACKAGE}.train_step": 2,
    f"{PACKAGE}.encoder_restore": 2,
    # 3-4: retrieval over restored encoders, and evaluation over retrieval.
    f"{PACKAGE}.retrieval": 3,
    f"{PACKAGE}.evaluation": 4,
    # 5: the training loop, which runs the retrieval evaluator, and the cost report compiling its step.
    f"{PACKAGE}.trainer": 5,
    f"{PACKAGE}.cost_report": 5,
    # 6: the command lines.
    f"{PACKAGE}.main": 6,
    f"{PACKAGE}.export": 6,
    f"{PACKAGE}.search": 6,
    f"{PACKAGE}.evaluate": 6,
    f"{PACKAGE}.prepare": 6,
    f"{PACKAGE}.stats": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported_modules(source: str, name: str, modules: set[str], *, is_package: bool = False) -> set[str]:
    """The package modules `source` imports anywhere, in functions too (`from pkg import sub`: `sub`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # Relative: resolved against this module's package.
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {
        name: imported_modules(path.read_text(), name, set(modules), is_package=path.name == "__init__.py")
        for name, path in modules.items()
    }


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (layer i) -> b (layer j)' for every import of a higher layer."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(name):
                found.append(f"{name} (layer {layer_of(name)}) -> {target} (layer {layer_of(target)})")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(name: str) -> list[str] | None:
        stack.append(name)
        on_stack.add(name)
        for target in sorted(graph.get(name, ())):
            if target in on_stack:
                return [*stack[stack.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        on_stack.discard(name)
        done.add(name)
        return None

    for name in sorted(graph):
        if name not in done:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_every_module_has_a_layer():
    missing = [name for name in package_modules() if layer_of(name) is None]
    assert not missing, f"Give these modules a layer in LAYERS: {missing}"


def test_no_import_points_up_a_layer():
    upward = upward_imports(import_graph())
    assert not upward, "Imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "Import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_a_function_level_upward_import_and_a_cycle():
    modules = set(package_modules())
    retrieval, evaluation = f"{PACKAGE}.retrieval.exporter", f"{PACKAGE}.evaluation.retrieval_metrics"
    lazy = "def f():\n    from rejepa_jax.evaluation import retrieval_metrics\n"
    graph = {retrieval: imported_modules(lazy, retrieval, modules)}
    assert graph == {retrieval: {evaluation}}
    assert upward_imports(graph) == [f"{retrieval} (layer 3) -> {evaluation} (layer 4)"]
    cycle = find_cycle({retrieval: {evaluation}, evaluation: {retrieval}})
    assert cycle in ([retrieval, evaluation, retrieval], [evaluation, retrieval, evaluation])
    relative = "from ..retrieval import exact_search\nfrom . import result_gallery\n"
    assert imported_modules(relative, evaluation, modules) == {
        f"{PACKAGE}.retrieval.exact_search",
        f"{PACKAGE}.evaluation.result_gallery",
    }
