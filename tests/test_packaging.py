"""Packaging: trainer/, cli/ and migrations/ install as vopstore.* (never bare top-level modules),
``pip install .`` and ``pip install -e .`` both import them, and dependencies point one way."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMPORTS = "import vopstore, vopstore.trainer, vopstore.cli, vopstore.cli.app, vopstore.migrations"


def _roots() -> dict[str, str]:
    """setup.py's package -> folder map, read without running setup()."""
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "ROOTS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no ROOTS mapping")


ROOTS = _roots()


def _pip(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   cwd=cwd, check=True, timeout=300)


def _child(python: str, *, cwd: Path, pythonpath: list[str], append: tuple[str, ...] = ()) -> str:
    """Import the mapped packages in a fresh interpreter; return where vopstore.trainer / cli came from.

    ``append`` goes to the END of sys.path at run time: the test venv's site-packages holds an
    editable finder module of the same name as the fresh venv's, which must not shadow it.
    """
    code = (f"import sys; sys.path.extend({list(append)!r}); {IMPORTS}; "
            "print(vopstore.trainer.__file__); print(vopstore.cli.app.__file__)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    env.pop("PYTHONSAFEPATH", None)
    done = subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the project sources, so builds neither write build/ into nor race on the shared tree."""
    dest = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in set(ROOTS.values()):
        shutil.copytree(REPO / folder, dest / folder, ignore=junk)
    return dest


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source), cwd=out)
    (built,) = out.glob("vopstore-*.whl")
    return built


def _expected_files(source: Path) -> set[str]:
    """Every module of every mapped package (folders with __init__.py) plus declared package data."""
    expected = set()
    for package, folder in ROOTS.items():
        for init in (source / folder).rglob("__init__.py"):
            pkg_dir = init.parent
            rel_parts = pkg_dir.relative_to(source / folder).parts
            if not all((source / folder / Path(*rel_parts[:i]) / "__init__.py").exists() for i in range(len(rel_parts))):
                continue
            for module in pkg_dir.glob("*.py"):
                expected.add("/".join([*package.split("."), *rel_parts, module.name]))
    package_data = tomllib.loads((source / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, patterns in package_data.items():
        folder = source / ROOTS.get(package, package.replace(".", "/"))
        for pattern in patterns:
            for path in folder.glob(pattern):
                expected.add("/".join([*package.split("."), path.relative_to(folder).as_posix()]))
    return expected


@pytest.mark.slow
def test_wheel_holds_the_mapped_packages_and_no_bare_top_level_ones(wheel, source):
    names = set(zipfile.ZipFile(wheel).namelist())
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"vopstore"}, f"unexpected top-level entries: {top_level - {'vopstore'}}"
    for required in ("vopstore/trainer/__init__.py", "vopstore/cli/app.py", "vopstore/migrations/env.py"):
        assert required in names
    missing = _expected_files(source) - names
    assert not missing, f"files missing from the wheel: {sorted(missing)}"


@pytest.mark.slow
def test_pip_install_target_imports_the_mapped_packages(wheel, tmp_path):
    target = tmp_path / "target"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=tmp_path)
    assert not (target / "trainer").exists() and not (target / "cli").exists()
    assert (target / "vopstore/migrations/env.py").is_file()
    where = _child(sys.executable, cwd=tmp_path, pythonpath=[str(target)])
    assert where.splitlines() == [str(target / "vopstore/trainer/__init__.py"), str(target / "vopstore/cli/app.py")]


@pytest.mark.slow
def test_pip_install_editable_imports_the_mapped_packages(source, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # Built by the test venv's pip and setuptools (the fresh venv has neither), installed into the fresh venv.
    # --ignore-installed: without it pip uninstalls the RUNNING venv's vopstore before installing into --prefix.
    _pip("install", "--no-deps", "--no-build-isolation", "--ignore-installed", "--prefix", str(venv), "-e", str(source),
         cwd=tmp_path)
    still_there = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; m.distribution('vopstore')"],
                                 capture_output=True, timeout=60)
    assert still_there.returncode == 0, "installing into the fresh venv removed the running venv's vopstore"
    # Dependencies (typer, rich, ...) come from the test venv, after the fresh venv's own site-packages.
    deps = sysconfig.get_paths()["purelib"]
    where = _child(python, cwd=tmp_path, pythonpath=[], append=(deps,))
    assert where.splitlines() == [str(source / "trainer/__init__.py"), str(source / "cli/app.py")]


def _imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against ``package``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("vopstore."):
            found.add(node.value)  # importlib.import_module targets and lazy-import maps
    return found


def _package_of(path: Path, folder: Path, package: str) -> str:
    # Both pkg/__init__.py and pkg/mod.py resolve relative imports against pkg.
    return ".".join([package, *path.relative_to(folder).parts[:-1]])


def _forbidden_imports(package: str, forbidden: tuple[str, ...]) -> list[str]:
    folder = REPO / ROOTS[package]
    nested = [REPO / f for p, f in ROOTS.items() if p != package and (REPO / f).is_relative_to(folder)]
    problems = []
    for path in folder.rglob("*.py"):
        if any(path.is_relative_to(n) for n in nested) or "__pycache__" in path.parts:
            continue
        for module in _imported_modules(path, _package_of(path, folder, package)):
            if any(module == bad or module.startswith(bad + ".") for bad in forbidden):
                problems.append(f"{path.relative_to(REPO)} imports {module}")
    return problems


def test_vopstore_never_imports_trainer_or_cli():
    assert _forbidden_imports("vopstore", ("vopstore.trainer", "vopstore.cli", "trainer", "cli")) == []


def test_trainer_never_imports_cli():
    assert _forbidden_imports("vopstore.trainer", ("vopstore.cli", "cli")) == []


def test_the_import_checker_sees_relative_and_lazy_imports(tmp_path):
    sample = tmp_path / "mod.py"
    sample.write_text(
        "from . import trainer\nfrom ..cli import app\nimport importlib\n"
        "importlib.import_module('vopstore.cli.app')\n"
    )
    found = _imported_modules(sample, "vopstore.store")
    assert {"vopstore.store.trainer", "vopstore.cli.app", "vopstore.cli"} <= found
    assert "vopstore.trainer" in _imported_modules(sample, "vopstore")
