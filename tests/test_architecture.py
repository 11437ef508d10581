"""The shape of the code base (issue #13): no import cycles between maskkit's modules — counting
every import statement, including those inside functions —, imports only go down the layers,
argparse only in ``maskkit/cli``, no file over 600 lines, no function over 80 lines, and the
engine never asks which system it runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "maskkit"
# Top to bottom; a module may import from its own layer's package and from any layer below.
LAYERS = [
    {"maskkit.cli"},
    {"maskkit.serve"},
    {"maskkit.engine"},
    {"maskkit.evaluation", "maskkit.viz", "maskkit.convert", "maskkit.export"},
    {"maskkit.checkpoint"},
    {"maskkit.models", "maskkit.data"},
    {"maskkit.config", "maskkit.structures", "maskkit.metrics_log", "maskkit.safe_load"},
    {"maskkit.masks"},
    {"maskkit.errors", "maskkit.atomic", "maskkit.geometry"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """maskkit modules imported anywhere in ``path`` (module level and inside functions);
    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            ]
        else:
            continue
        found |= {n for n in names if n == "maskkit" or n.startswith("maskkit.")}
    return found


GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def _layer(module: str) -> int | None:
    for k, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return k
    return None  # the package root (maskkit/__init__.py, __main__.py) sits above all layers


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
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
            if len(comp) > 1 or v in GRAPH[v]:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from maskkit.engine import training\n    import maskkit.viz\n")
    assert _imports(f) == {"maskkit.engine.training", "maskkit.viz"}


def test_no_import_cycles():
    assert _cycles() == []


def test_imports_only_go_down_the_layers():
    upward = []
    for m, deps in GRAPH.items():
        lm = _layer(m)
        if lm is None:
            continue
        for d in deps:
            ld = _layer(d)
            if ld is not None and ld < lm:
                upward.append(f"{m} -> {d}")
    assert upward == []


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None and m not in ("maskkit", "maskkit.__main__")] == []


def test_argparse_only_in_the_cli():
    users = [
        m
        for m, p in MODULES.items()
        if "argparse"
        in {a.name for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Import) for a in n.names}
        | {n.module for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom)}
    ]
    assert users and all(m.startswith("maskkit.cli") for m in users), users


@pytest.mark.parametrize("module", sorted(MODULES))
def test_file_and_function_sizes(module):
    path = MODULES[module]
    lines = path.read_text().splitlines()
    assert len(lines) <= 600, f"{path}: {len(lines)} lines"
    long = [
        f"{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80
    ]
    assert long == [], f"{path}: {long}"


def test_the_engine_never_asks_which_system():
    """System-specific behaviour lives in engine/systems.py (one record per system); the rest of
    the engine asks the record: no comparison with a system name, no ``.system ==``, no probing a
    model for a system's methods (``hasattr``/``getattr`` of ``set_stage``), no ``isinstance`` on
    a system's model or config class, no record looked up by a literal name (``SYSTEMS["..."]``)."""
    pattern = re.compile(
        r"""[=!]=\s*["'](?:sharpmask|centermask)["']|["'](?:sharpmask|centermask)["']\s*[=!]=|"""
        r"""\.system\s*[=!]=|set_stage|"""
        r"""isinstance\([^)]*\b(?:CenterMask|SharpMask|CenterMaskConfig|SharpMaskConfig)\b|"""
        r"""(?:SYSTEMS|SPECS|MODEL_CONFIGS)\[\s*["']"""
    )
    offenders = [
        f"{m}: {hit}"
        for m, p in MODULES.items()
        if m.startswith("maskkit.engine") and m != "maskkit.engine.systems"
        for hit in pattern.findall(p.read_text())
    ]
    assert offenders == []


def test_no_private_names_imported_across_modules():
    """A ``_name`` is private to its module: other library modules import public names only."""
    crossing = [
        f"{m}: from {node.module} import {a.name}"
        for m, p in MODULES.items()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskkit")
        for a in node.names
        if a.name.startswith("_") and not a.name.startswith("__")
    ]
    assert crossing == []


def _literal_fields(obj, where=""):
    """(dotted name, allowed values) of every ``Literal`` field of a config tree."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name, value = f"{where}.{f.name}" if where else f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _literal_fields(value, name)
        elif typing.get_origin(hints[f.name]) is typing.Literal:
            yield name, typing.get_args(hints[f.name])


def test_every_choice_field_is_refused_at_parse_time_naming_its_values():
    """Choice fields are typed ``Literal[...]`` and checked as an override is parsed: a value
    outside them is one ConfigError that names every allowed value (both systems' configs)."""
    from maskkit.config import Config, ConfigError, apply_overrides
    from maskkit.models.centermask.config import CenterMaskConfig
    from maskkit.models.sharpmask.config import SharpMaskConfig

    seen = 0
    for model in (CenterMaskConfig(), SharpMaskConfig()):
        for name, allowed in _literal_fields(Config(model=model)):
            seen += 1
            with pytest.raises(ConfigError) as e:
                apply_overrides(Config(model=type(model)()), [f"{name}=not-a-choice"])
            assert all(repr(a) in str(e.value) for a in allowed) and name in str(e.value), (name, str(e.value))
    assert seen >= 20  # data, train, CenterMask (backbone, FCOS, mask head) and SharpMask choices


def _reaches(source: str, target: str) -> list[str]:
    """A chain of imports from a module under ``source`` to one under ``target`` (empty: none)."""
    starts = [m for m in GRAPH if m == source or m.startswith(source + ".")]
    seen, stack = set(), [[m] for m in starts]
    while stack:
        path = stack.pop()
        for d in sorted(GRAPH[path[-1]]):
            if d == target or d.startswith(target + "."):
                return path + [d]
            if d not in seen:
                seen.add(d)
                stack.append(path + [d])
    return []


def test_engine_subpackages_are_layered():
    """Inference never imports training, not even through another module (training uses inference
    for its periodic evaluation); training never imports an export graph or runtime itself (a
    system record builds its graph on demand); the system records and the process group import
    neither."""
    assert _reaches("maskkit.engine.inference", "maskkit.engine.training") == []
    direct = [f"{m} -> {d}" for m, deps in GRAPH.items() if m.startswith("maskkit.engine.training") for d in deps]
    assert [x for x in direct if " -> maskkit.export" in x] == []
    for low in ("maskkit.engine.systems", "maskkit.engine.distributed"):
        for high in (
            "maskkit.engine.training",
            "maskkit.engine.inference",
            "maskkit.engine.demo",
            "maskkit.engine.bench",
        ):
            assert _reaches(low, high) == [], (low, high)


def test_no_issue_numbers_in_the_code():
    """The code says why (the paper, REFERENCE.md, a benchmark file); which issue asked for it is
    history, kept in commit messages and benchmarks/*.md."""
    pattern = re.compile(r"\bissue\s*#?\s*\d+|#\d+ item", re.IGNORECASE)
    hits = [f"{m}: {h}" for m, p in MODULES.items() for h in pattern.findall(p.read_text())]
    assert hits == []


def test_the_post_processing_convention_is_chosen_once():
    """maskkit's vs the official post-processing is one object (models/centermask/postprocess.py),
    asked for its rules: no string comparison with the convention's name anywhere else."""
    pattern = re.compile(r"""postprocess\s*[!=]=|[!=]=\s*["']centermask2["']|["']centermask2["']\s*[!=]=""")
    hits = [
        f"{m}: {h}"
        for m, p in MODULES.items()
        if m != "maskkit.models.centermask.postprocess"
        for h in pattern.findall(p.read_text())
    ]
    assert hits == []
