"""Class 3: honest evaluation (every true mask counted), plain CSV tables, no silent replacement
of history or curve files."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_skinseg.cli import main
from napari_skinseg.evaluation import evaluate_folders
from napari_skinseg.image_io import write_mask
from napari_skinseg.pairs import mask_filename

TINY_TRAIN = ["--size", "64", "--batch-size", "3", "--decoder-channels", "32,16,16,8,8",
              "--device", "cpu", "--epochs", "1"]


@pytest.fixture
def folders(tmp_path, synthetic_folder):
    truth = shutil.copytree(synthetic_folder[1], tmp_path / "truth")
    pred = shutil.copytree(truth, tmp_path / "pred")
    return pred, truth


def test_missing_and_unreadable_predictions_are_counted(folders, capsys):
    pred, truth = folders
    ids = sorted(p.name[: -len("_segmentation.png")] for p in truth.iterdir())
    (pred / mask_filename(ids[0])).unlink()
    (pred / mask_filename(ids[1])).write_bytes(b"not a png")
    empty = np.zeros((96, 128), bool)
    write_mask(pred / mask_filename(ids[2]), empty, overwrite=True)
    assert main(["evaluate", str(pred), str(truth)]) == 1
    out = capsys.readouterr().out
    assert "4 images scored of 6 true masks (2 without a usable prediction" in out
    assert f"missing: {mask_filename(ids[0])}: no prediction" in out
    assert f"missing: {mask_filename(ids[1])}: prediction unreadable" in out
    with open(pred / "evaluation.csv", newline="") as fh:
        lines = fh.read().splitlines()
    rows = list(csv.DictReader(lines))
    assert lines[0].startswith("id,accuracy") and len(rows) == 4  # a plain table
    assert sorted(r["id"] for r in rows) == ids[2:]
    assert float({r["id"]: r for r in rows}[ids[2]]["dice"]) == 0.0
    evaluation = evaluate_folders(pred, truth)
    assert evaluation.n_truth == 6 and not evaluation.complete
    assert evaluation.means["dice"] == pytest.approx(0.75)  # 3 perfect, 1 empty


def test_same_folder_twice_and_mismatched_names(folders, tmp_path, capsys):
    pred, truth = folders
    assert main(["evaluate", str(truth), str(truth), "--csv", str(tmp_path / "e.csv")]) == 2
    assert "same folder" in capsys.readouterr().err
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for i, p in enumerate(sorted(pred.iterdir())):
        shutil.copy(p, renamed / f"prediction_{i}.png")
    assert main(["evaluate", str(renamed), str(truth)]) == 2
    err = capsys.readouterr().err
    assert "none of the 6 true masks" in err and "<id>_segmentation.png" in err
    assert "prediction_0.png" in err and not (renamed / "evaluation.csv").exists()


def test_truth_may_be_a_pair_folder_and_all_is_well_when_complete(folders, synthetic_folder, capsys):
    pred, _ = folders
    root = synthetic_folder[0].parent  # images/ + masks/
    assert main(["evaluate", str(pred), str(root), "--csv", str(pred / "e.csv")]) == 0
    assert "6 images scored of 6 true masks;" in capsys.readouterr().out


def test_history_and_curves_are_never_replaced_without_overwrite(tmp_path, synthetic_folder, capsys):
    images, masks = synthetic_folder
    first = tmp_path / "h.pt"
    assert main(["train", str(images), str(masks), "--out", str(first), *TINY_TRAIN]) == 0
    history = (tmp_path / "h_history.csv").read_bytes()
    curves = (tmp_path / "h_curves.png").read_bytes()
    capsys.readouterr()
    assert main(["train", str(images), str(masks), "--out", str(tmp_path / "h.pth"), *TINY_TRAIN]) == 2
    captured = capsys.readouterr()
    assert "h_history.csv exists" in captured.err and "reading" not in captured.out
    assert not (tmp_path / "h.pth").exists()
    assert (tmp_path / "h_history.csv").read_bytes() == history
    assert (tmp_path / "h_curves.png").read_bytes() == curves
    assert main(["train", str(images), str(masks), "--out", str(tmp_path / "h.pth"), *TINY_TRAIN,
                 "--overwrite"]) == 0


def test_a_second_true_mask_for_one_id_is_reported_not_silently_dropped(folders, capsys):
    pred, truth = folders
    first = sorted(truth.iterdir())[0]
    image_id = first.name[: -len("_segmentation.png")]
    shutil.copy(first, truth / f"{image_id}_mask.png")  # the same lesion saved twice
    evaluation = evaluate_folders(pred, truth)
    assert evaluation.n_truth == 6 and len(evaluation.rows) == 6
    assert [s.path.name for s in evaluation.skipped] == [f"{image_id}_mask.png"]
    main(["evaluate", str(pred), str(truth)])
    assert f"second true mask for '{image_id}'; {first.name} is the one used" in capsys.readouterr().out


def test_ids_with_dots_find_their_predictions(tmp_path, synthetic_folder, capsys):
    # `segment` writes `2023.05.01 lesion_segmentation.png` for `2023.05.01 lesion.jpg`;
    # evaluate once looked for `2023.05_segmentation.png` and called it missing
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir(), pred.mkdir()
    source = sorted(synthetic_folder[1].iterdir())[0]
    for image_id in ("2023.05.01 lesion", "a.b", "plain"):
        for folder in (truth, pred):
            shutil.copy(source, folder / mask_filename(image_id))
    assert main(["evaluate", str(pred), str(truth)]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out and "skipped" not in out
    assert "3 images scored of 3 true masks" in out


def test_predictions_of_another_size_are_named_as_such(folders, capsys):
    # a prediction named right but of another size (e.g. the truth drawn on an EXIF-rotated
    # photo's stored pixels) was called "unreadable", and when all were, the user was told to
    # rename files that were named right
    pred, truth = folders
    for path in pred.iterdir():
        mask = np.asarray(Image.open(path))
        Image.fromarray(np.ascontiguousarray(mask.T)).save(path)
    assert main(["evaluate", str(pred), str(truth)]) == 2
    err = capsys.readouterr().err
    assert "could be scored" in err and "is 96x128 but the true mask is 128x96" in err
    assert "swapped" in err and "must be named" not in err
    first = sorted(pred.iterdir())[0]
    shutil.copy(truth / first.name, first)  # one right, the others turned
    assert main(["evaluate", str(pred), str(truth), "--overwrite"]) == 1
    out = capsys.readouterr().out
    assert "1 images scored of 6" in out and "unreadable" not in out
    assert out.count("but the true mask is 128x96") == 5
