"""The package's layers only point down, and no package reaches into another's private names.

Low to high: the shared modules (errors, files, locking, settings, storage, text, _tensorflow), then reading ->
encoding -> caching -> embedding -> training -> scoring -> scheduling, then the command line and
the package's own __init__ (the public API). A module may import its own layer and the ones
below; reading every import statement (TYPE_CHECKING and function-level ones included) keeps the
rule true for imports that run late as well as early.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "elmobatch"
LAYERS = [
    {"errors", "files", "locking", "settings", "storage", "text", "_tensorflow"},
    {"reading"},
    {"encoding"},
    {"caching"},
    {"embedding"},
    {"training"},
    {"scoring"},
    {"scheduling"},
    {"cli", "cli_options", "__main__", "__init__"},
]
PACKAGE_METADATA = {"__version__"}  # importable from the package itself at any layer


def part_of(module: str) -> str:
    """'elmobatch.embedding.job' -> 'embedding'; 'elmobatch' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(part: str) -> int:
    return next(i for i, parts in enumerate(LAYERS) if part in parts)


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports(path: Path):
    """(imported module, names imported from it) for every elmobatch import in `path`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "elmobatch":
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "elmobatch":
                    yield alias.name, []


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(module_name(path)) for path in sources()}
    assert parts <= set().union(*LAYERS), f"give these a layer: {parts - set().union(*LAYERS)}"


def test_imports_point_down():
    upward = []
    for path in sources():
        importer = part_of(module_name(path))
        for module, names in imports(path):
            imported = part_of(module)
            if imported == "__init__" and set(names) <= PACKAGE_METADATA:
                continue
            if layer(imported) > layer(importer):
                upward.append(f"{path.relative_to(PACKAGE.parent)}: {importer} imports {module} ({imported} is higher)")
    assert not upward, "\n".join(upward)


def test_no_private_names_are_imported_across_packages():
    reached = []
    for path in sources():
        importer = part_of(module_name(path))
        for module, names in imports(path):
            private = [n for n in names if n.startswith("_") and n not in PACKAGE_METADATA]
            if private and part_of(module) != importer:
                reached.append(f"{path.relative_to(PACKAGE.parent)}: {', '.join(private)} from {module}")
    assert not reached, "\n".join(reached)


def test_the_rule_sees_an_upward_import(tmp_path):
    """The checker itself: an import of scoring from reading is reported as upward."""
    bad = tmp_path / "elmobatch" / "reading" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from elmobatch.scoring.score import score_file\nfrom elmobatch.caching.cache import _writing\n")
    [(module, names), (other, private)] = list(imports(bad))
    assert layer(part_of(module)) > layer("reading") and names == ["score_file"]
    assert part_of(other) == "caching" and private == ["_writing"]
