"""What a normal (non-editable) install gets: the wheel and the sdist carry everything the package
loads at run time and everything their tests need (developers only ever used `pip install -e .`,
which reads the checkout, so a file missing from the archives would go unnoticed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import napari_skinseg
from napari_skinseg.bundled import BUNDLED_CLICK_MODEL_NAME, BUNDLED_MODEL_NAME

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_skinseg"
# what the build reads; copied, so that the build's egg-info and build/ never land in the checkout
# (an egg-info beside the package on PYTHONPATH would make npe2 see the plugin twice)
BUILD_INPUTS = ["pyproject.toml", "README.md", "LICENSE", "MODEL_CARD.md", "MANIFEST.in", "src", "tests"]


def _build(tmp_path_factory, what: str) -> Path:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:  # what pyproject.toml's build needs
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build asks for")
    tree = tmp_path_factory.mktemp(f"{what}-source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, tree / name)
    out = tmp_path_factory.mktemp(what)
    code = f"from setuptools import build_meta; print(build_meta.build_{what}({str(out)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> dict[str, str]:
    """Every name in the wheel, with the text of its dist-info files ("" for the others)."""
    with zipfile.ZipFile(_build(tmp_path_factory, "wheel")) as whl:
        return {n: whl.read(n).decode("utf-8", "replace") if ".dist-info/" in n else ""
                for n in whl.namelist()}


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory) -> set[str]:
    with tarfile.open(_build(tmp_path_factory, "sdist")) as tar:
        return {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}


def test_the_wheel_carries_every_module_the_manifest_and_both_bundled_models(wheel):
    modules = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")}
    assert modules - set(wheel) == set()
    assert "napari_skinseg/napari.yaml" in wheel
    for name in (BUNDLED_MODEL_NAME, BUNDLED_CLICK_MODEL_NAME):
        assert f"napari_skinseg/weights/{name}" in wheel


def test_the_wheel_declares_the_command_the_plugin_its_version_and_the_weights_terms(wheel):
    entry_points = next(t for n, t in wheel.items() if n.endswith("entry_points.txt"))
    assert "skinseg = napari_skinseg.cli:main" in entry_points
    assert "napari-skinseg = napari_skinseg:napari.yaml" in entry_points
    metadata = next(t for n, t in wheel.items() if n.endswith("/METADATA"))
    assert f"\nVersion: {napari_skinseg.__version__}\n" in metadata  # what --version prints
    # the weights are trained on CC BY-NC data: their terms ship with them, not only the code's
    licences = {n.rsplit("/", 1)[1] for n in wheel if ".dist-info/licenses/" in n}
    assert {"LICENSE", "MODEL_CARD.md"} <= licences


def test_the_sdist_carries_what_its_tests_need_and_the_weights_terms(sdist_names):
    tests = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py")}
    assert tests - sdist_names == set()  # conftest.py, __init__.py, user_path/napari_first.py
    assert {"MODEL_CARD.md", "LICENSE", "src/napari_skinseg/napari.yaml",
            f"src/napari_skinseg/weights/{BUNDLED_MODEL_NAME}"} <= sdist_names
