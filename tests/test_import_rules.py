"""The package's import rules, read from every import statement (module level or inside a function):

1. the from-scratch code (``peftlab/core``, ``peftlab/methods``) never imports the production
   libraries (peft, AdapterHub ``adapters``, bitsandbytes); in the package only ``peftlab/production/`` does;
2. only ``peftlab/explorers/widgets.py`` draws (ipywidgets, plotly), so computations run without a screen;
3. the package never imports from ``notebooks/``, nor the scripts that build ``data/`` (``data/make/``);
4. the package never imports nbgrader: grading a class is the ``classroom`` extra (``classroom/autograder.py``);

and the layers named in the package docstring each import only the layers above them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "peftlab"
PRODUCTION_LIBRARIES = {"peft", "adapters", "bitsandbytes"}
DRAWING_LIBRARIES = {"ipywidgets", "plotly", "matplotlib"}
# Each may import only those before it. A layer is a subpackage (``study/``) or a module beside them (``memory.py``).
LAYERS = ["core", "methods", "course", "production", "memory", "grading", "study", "explorers", "cli"]
CLASSROOM_LIBRARIES = {"nbgrader"}  # the classroom extra: a learner who only reads and runs the book goes without


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Every module named by an import statement anywhere in the file (relative imports resolved
    against ``package``, by default the file's own)."""
    names = set()
    package = package or ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # "from peftlab.methods import lora"
    return names


def roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def package_files():
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str | None:
    """The layer a package file belongs to (None for the package's own __init__ and __main__)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[0] in LAYERS else None


def test_every_package_file_sits_in_a_layer():
    def placed(path: Path) -> bool:
        if path.parent == PACKAGE:
            return path.name in ("__init__.py", "__main__.py") or layer_of(path) is not None
        return layer_of(path) is not None

    stray = [str(p.relative_to(ROOT)) for p in package_files() if not placed(p)]
    assert not stray, f"files outside the layers {LAYERS}: {stray}"


def test_from_scratch_code_never_imports_the_production_libraries():
    scratch = [p for p in package_files() if layer_of(p) in ("core", "methods")]
    assert len(scratch) >= 10
    for path in package_files():
        found = roots(imported_modules(path)) & PRODUCTION_LIBRARIES
        if layer_of(path) != "production":
            assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}: only peftlab/production/ may"


def test_only_the_widgets_module_draws():
    for path in package_files():
        found = roots(imported_modules(path)) & DRAWING_LIBRARIES
        if path.relative_to(PACKAGE) != Path("explorers/widgets.py"):
            assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}: only peftlab/explorers/widgets.py draws"


def test_the_package_never_imports_the_classroom_libraries():
    for path in package_files():
        found = roots(imported_modules(path)) & CLASSROOM_LIBRARIES
        assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}: grading a class lives in classroom/"


def test_the_package_never_imports_notebooks_or_the_data_builders():
    builders = {p.stem for p in (ROOT / "data" / "make").glob("*.py")}
    assert {"base_model", "corpus", "task_files"} <= builders
    for path in package_files():
        found = roots(imported_modules(path)) & ({"notebooks", "data"} | builders)
        assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"
        assert "notebooks" not in path.read_text(), f"{path.relative_to(ROOT)} reaches into notebooks/"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_above_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    for path in package_files():
        if layer_of(path) != layer:
            continue
        used = {m.split(".")[1] for m in imported_modules(path) if m.startswith("peftlab.")}
        assert used <= allowed, f"{path.relative_to(ROOT)} imports peftlab.{sorted(used - allowed)}, a layer below it"


def test_the_reader_finds_imports_inside_functions_and_relative_ones(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import peft\n    from ..explorers import widgets\n")
    modules = imported_modules(sample, package="peftlab.methods")
    assert "peft" in modules and "peftlab.explorers.widgets" in modules
