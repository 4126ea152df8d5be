"""Packaging: plugins/ ships as odebench_plugins in the wheel, with the entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_in_tree() -> set[str]:
    found = set()
    for top, name in (("odebench", "odebench"), ("plugins", "odebench_plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]))
    return found


def test_package_list_matches_the_tree():
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _packages_in_tree()
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["odebench_plugins"] == "plugins"


def test_wheel_contains_plugins_as_odebench_plugins(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "odebench", src / "odebench", ignore=ignore)
    shutil.copytree(ROOT / "plugins", src / "plugins", ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("odebench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("odebench/__init__.py", "odebench/cli.py", "odebench/backends/torch.py",
                   "odebench_plugins/__init__.py", "odebench_plugins/torchdiffeq_solvers.py",
                   "odebench_plugins/torch_custom/__init__.py"):
        assert module in names, module
    assert not any(n.startswith("plugins/") for n in names)
    (ep_file,) = [n for n in names if n.endswith("entry_points.txt")]
    entry_points = zipfile.ZipFile(wheel).read(ep_file).decode()
    assert "[odebench.plugins]" in entry_points
    assert "torchdiffeq = odebench_plugins.torchdiffeq_solvers:TorchdiffeqPlugin" in entry_points
    assert "odebench = odebench.cli:main" in entry_points


def test_constraints_pin_the_cpu_torch():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["torch"] == "2.13.0"
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in ("torch", "jax", "dask", "slurm", "all", "dev"):
        assert extra in extras
    assert "odebench[torch,jax,scipy,dask]" in extras["all"]  # CI installs [all]: the Dask tests run there
    for req in extras["torch"] + extras["jax"] + extras["dask"] + extras["slurm"] + extras["dev"]:
        if req.startswith("odebench["):
            continue  # an extra of this project
        name = req.split(">")[0].split("=")[0].split("<")[0].strip()
        assert name in pins, f"{name} is not pinned in constraints.txt"
