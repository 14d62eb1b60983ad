"""Class 6 and the import rules: the pair-folder convention has one home (pairs.py), and the
modules napari imports stay free of torch (and every core module free of Qt and napari)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import napari_skinseg

PACKAGE = Path(napari_skinseg.__file__).parent
CORE = sorted(p for p in PACKAGE.glob("*.py") if not p.name.startswith("worker_"))
CONVENTION = {"images", "masks", "_segmentation", "_mask", "_overlay", "_probability"}


def _string_constants(tree: ast.AST):
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_the_pair_folder_convention_is_spelled_only_in_pairs_py():
    offenders = []
    for path in CORE:
        if path.name == "pairs.py":
            continue
        for node in _string_constants(ast.parse(path.read_text())):
            text = node.value.strip("/.")
            if text in CONVENTION or any(f"{s}." in node.value for s in CONVENTION if s[0] == "_") \
                    or "/images" in node.value or "/masks" in node.value:
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_every_csv_the_package_writes_escapes_its_text_through_csv_cells():
    # A new CSV writer must escape its text cells (ids from file names) like the others.
    writers = {p.name for p in CORE if "csv.writer(" in p.read_text()
               or "csv.DictWriter(" in p.read_text()}
    assert writers == {"evaluation.py", "history.py", "measurements.py", "review.py"}
    escaping = {p.name for p in CORE if "from .csv_cells import" in p.read_text()}
    assert writers - escaping == {"history.py"}  # epochs and losses: numbers only


def test_napari_side_modules_never_import_torch_and_the_core_never_imports_qt():
    light = ["config", "reports", "pairs", "image_io", "postprocess", "measurements", "destinations",
             "atomic", "evaluation", "history", "metrics"]
    code = ("import sys\n"
            + "".join(f"import napari_skinseg.{m}\n" for m in light)
            + "heavy = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6') if m in sys.modules]\n"
            + "assert not heavy, heavy\n"
            + "import napari_skinseg.cli, napari_skinseg.training, napari_skinseg.folder_segmentation\n"
            + "import napari_skinseg.prediction, napari_skinseg.dataset\n"
            + "qt = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6') if m in sys.modules]\n"
            + "assert not qt, qt\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(PACKAGE.parent)})
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_manifest_at_the_repo_root_is_the_one_the_package_ships():
    # The brief keeps napari.yaml at the repo root; npe2 reads the package's copy. They must
    # never drift apart (a command named in one and not the other breaks a dock).
    root = PACKAGE.parents[1] / "napari.yaml"
    if not root.exists():
        pytest.skip("an installed package, without its checkout")
    assert root.read_text() == (PACKAGE / "napari.yaml").read_text()


def test_train_takes_a_pair_folder(tmp_path, synthetic_folder, capsys):
    from napari_skinseg.cli import main

    root = synthetic_folder[0].parent  # <root>/images + <root>/masks, the convention's layout
    assert main(["train", str(root), "--out", str(tmp_path / "m.pt"), "--epochs", "1", "--size", "64",
                 "--decoder-channels", "32,16,16,8,8", "--device", "cpu"]) == 0
    assert "reading 6 pairs" in capsys.readouterr().out


def test_train_on_a_pair_folder_keeps_pairs_accepted_unseen_out_of_validation(tmp_path,
                                                                              synthetic_folder, capsys):
    # The command line splits a curated folder as napari's Retrain on curated does.
    import shutil

    from napari_skinseg.cli import main
    from napari_skinseg.model import load_model
    from napari_skinseg.pairs import UNREVIEWED_FILE

    root = tmp_path / "curated"
    shutil.copytree(synthetic_folder[0].parent, root)
    ids = sorted(p.stem for p in (root / "images").iterdir())
    (root / UNREVIEWED_FILE).write_text(json.dumps(ids[:4]))
    assert main(["train", str(root), "--out", str(tmp_path / "m.pt"), "--epochs", "1", "--size", "64",
                 "--decoder-channels", "32,16,16,8,8", "--device", "cpu", "--val-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "4 of 6 pairs were accepted without review" in out and "4:2 split" in out
    data = load_model(tmp_path / "m.pt").metadata.data
    assert sorted(data["val_names"]) == ids[4:] and data["unreviewed_names"] == ids[:4]
