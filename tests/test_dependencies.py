"""Every third-party package the code imports is declared in pyproject.toml.

A package that is only installed by hand, or only arrives as a dependency of a dependency, works on the
developer's machine and breaks a fresh one. The library may rely on core dependencies only; tests and
benchmarks may also use the extras.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from conftest import REPO_ROOT


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: `PyYAML` and `pyyaml`, `python_gdcm` and `python-gdcm` agree."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


# Library subpackages (and modules) that stand behind an extra (`pip install fracture[serve]`) may use that
# extra too; the runtimes of exported models import theirs when asked, with an error naming the extra.
OPTIONAL_SUBPACKAGES = {
    # Ray's modules first: the first entry that matches a file decides (ray_serve.py also has serve's imports).
    "fracture/ray_cluster.py": "ray",
    "fracture/inference/ray_predict.py": "ray",
    "fracture/training/ray_extraction.py": "ray",
    "fracture/serving/ray_serve.py": "ray",
    "fracture/training/distributed.py": "distributed",  # submitit, read only inside a submitit job
    "fracture/serving": "serve",
    "fracture/benchmarking/loadtest.py": "serve",  # httpx, the load test's client
    "fracture/deployment": "export",
    "fracture/models/runtimes.py": "export",
    "fracture/models/engines.py": "export",  # onnx, to join jax2onnx's external weights into one file
    "fracture/data/tables.py": "tables",  # pyarrow, for Parquet label tables only
    "fracture/tracking": "mlflow",  # imported only for logger=mlflow and format=mlflow
}


def declared(pyproject: dict) -> tuple[set[str], dict[str, set[str]]]:
    """(core distributions, each extra's distributions)."""
    project = pyproject["project"]
    core = {requirement_name(spec) for spec in project.get("dependencies", [])}
    extras = {
        extra: {requirement_name(spec) for spec in specs}
        for extra, specs in project.get("optional-dependencies", {}).items()
    }
    return core, extras


def allowed_for(path: str, core: set[str], extras: dict[str, set[str]]) -> tuple[set[str], str]:
    """The distributions a file may import, and how to name them in a message."""
    if not path.startswith("fracture/"):
        return core.union(*extras.values()), "dependencies or an extra"
    for folder, extra in OPTIONAL_SUBPACKAGES.items():
        if path == folder or path.startswith(folder + "/"):
            return core | extras.get(extra, set()), f"dependencies or the {extra!r} extra"
    return core, "dependencies"


def top_level_imports(path: Path) -> list[tuple[str, int]]:
    """(top-level module, line) for every absolute import in a Python file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
    return found


def undeclared_imports(repo: Path) -> list[str]:
    """'file:line: ...' for each import of a third-party package that pyproject.toml does not declare."""
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    own = canonical(pyproject["project"]["name"])
    core, extras = declared(pyproject)
    distributions = {module: {canonical(d) for d in dists} for module, dists in packages_distributions().items()}
    offenders = []
    for folder in ("fracture", "tests", "benchmarks"):
        files = sorted((repo / folder).rglob("*.py"))
        local = {own, "conftest"} | {path.stem for path in files}
        for path in files:
            relative = path.relative_to(repo).as_posix()
            allowed, scope = allowed_for(relative, core, extras)
            for module, line in top_level_imports(path):
                if module in sys.stdlib_module_names or module in local:
                    continue
                providers = distributions.get(module)
                if not providers:
                    offenders.append(f"{relative}:{line}: {module!r} is not installed and not declared")
                elif not providers & allowed:
                    source = f"{module!r} (from {sorted(providers)})"
                    offenders.append(f"{relative}:{line}: {source} is not in [project] {scope}")
    return offenders


def test_every_import_is_declared():
    offenders = undeclared_imports(REPO_ROOT)
    assert not offenders, "undeclared imports:\n" + "\n".join(offenders)


def test_the_check_names_file_and_line_of_an_undeclared_import(tmp_path):
    """The check itself can fail: a copy of the project whose pyproject drops pydicom and omegaconf."""
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    trimmed = re.sub(r'^\s*"(pydicom|omegaconf)[^\n]*\n', "", pyproject, flags=re.MULTILINE)
    assert trimmed != pyproject
    (tmp_path / "pyproject.toml").write_text(trimmed)
    (tmp_path / "fracture").mkdir()
    library_code = "import json\n\nimport pydicom\nfrom omegaconf import DictConfig\n"
    (tmp_path / "fracture" / "reader.py").write_text(library_code)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("import pytest\nfrom fracture import reader\n")
    offenders = undeclared_imports(tmp_path)
    assert len(offenders) == 2, offenders
    assert offenders[0].startswith("fracture/reader.py:3: 'pydicom'")
    assert offenders[1].startswith("fracture/reader.py:4: 'omegaconf'")


def test_extras_are_not_enough_for_the_library(tmp_path):
    """pytest is a test extra: fine in tests/, an offence in fracture/."""
    (tmp_path / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    (tmp_path / "fracture").mkdir()
    (tmp_path / "fracture" / "helpers.py").write_text("import pytest\n")
    assert undeclared_imports(tmp_path) == [
        "fracture/helpers.py:1: 'pytest' (from ['pytest']) is not in [project] dependencies"
    ]


def test_an_optional_subpackage_may_use_its_extra_and_no_other(tmp_path):
    (tmp_path / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    (tmp_path / "fracture" / "serving").mkdir(parents=True)
    (tmp_path / "fracture" / "serving" / "app.py").write_text("import fastapi\nimport optuna\n")
    (tmp_path / "fracture" / "serve.py").write_text("import fastapi\n")
    assert undeclared_imports(tmp_path) == [
        "fracture/serve.py:1: 'fastapi' (from ['fastapi']) is not in [project] dependencies",
        "fracture/serving/app.py:2: 'optuna' (from ['optuna']) is not in [project] dependencies or the 'serve' extra",
    ]
