"""fracture's layers: a module imports only from its own layer or from layers below it.

From the bottom:
0. core modules: `errors`, `io`, `cache_entry`, `console`, `compilation_cache`, `jax_depthwise`, `run_info`,
   `run_folder`, `ray_cluster`, `processes`
1. `data`: what an image is, folders, splits, the input stream
2. `models`: the network, checkpoints and their schema, the calibration map, the export contract, runtimes
3. `training`, `evaluation`, `inference`, `deployment`: what is done with a model (none imports another)
4. `serving`, `benchmarking`, `tracking`
5. orchestration and entry points: every other top-level module (`cli`, `recipe`, `train`, `predict`, ...)
"""

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "fracture"
CORE = {"errors", "io", "cache_entry", "console", "compilation_cache", "jax_depthwise", "run_info", "run_folder"}
CORE |= {"ray_cluster", "processes"}
LAYERS = {"data": 1, "models": 2, "training": 3, "evaluation": 3, "inference": 3, "deployment": 3}
LAYERS |= {"serving": 4, "benchmarking": 4, "tracking": 4}
ENTRY = 5


def layer_of(name: str) -> int:
    """The layer of `fracture.<name>`'s first component (a subpackage or a top-level module)."""
    if name in CORE:
        return 0
    return LAYERS.get(name, ENTRY)


def imports(path: Path) -> list[tuple[str, int]]:
    """(first component after `fracture.`, line) for every `fracture.*` import in a file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found += [(name.split(".")[1], node.lineno) for name in names if name.startswith("fracture.")]
    return found


def owner(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_the_layer_table_names_every_subpackage():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS)
    assert CORE <= {p.stem for p in PACKAGE.glob("*.py")}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_it_or_beside_it(path):
    mine = owner(path)
    wrong = []
    for target, line in imports(path):
        if target == mine:
            continue
        above = layer_of(target) > layer_of(mine)
        beside = layer_of(target) == layer_of(mine) and layer_of(mine) in (3, 4)  # siblings stay independent
        if above or beside:
            wrong.append(f"line {line}: fracture.{target} (layer {layer_of(target)})")
    assert not wrong, f"{path.relative_to(PACKAGE)} (layer {layer_of(mine)}) imports {wrong}"
