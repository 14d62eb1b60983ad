"""Review queue: quality features, the calibrated mapping, ranking, review.csv / review.html."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage, stats

from napari_skinseg.model import ModelMetadata, load_model
from napari_skinseg.quality import (
    FEATURE_NAMES,
    QualityModel,
    predicted_dice,
    quality_features,
)
from napari_skinseg.review import (
    QualityEstimate,
    estimate_from_views,
    estimate_quality,
    rank,
    write_review,
)
from napari_skinseg.synthetic import make_synthetic_lesion


def _dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def fake_views(truth: np.ndarray, level: float, seed: int) -> np.ndarray:
    """Eight 'test-time views' whose disagreement and error grow with ``level`` (0 = perfect)."""
    rng = np.random.default_rng(seed)
    views = []
    for _ in range(8):
        shift = rng.normal(0, 12 * level, 2)
        grow = int(rng.integers(-1, 2) * round(6 * level))
        m = ndimage.shift(truth.astype(np.float32), shift, order=0) > 0.5
        m = ndimage.binary_dilation(m, iterations=grow) if grow > 0 else \
            ndimage.binary_erosion(m, iterations=-grow) if grow < 0 else m
        views.append(ndimage.gaussian_filter(m.astype(np.float32), 1.5))
    return np.clip(np.stack(views), 0, 1)


def synthetic_cases(n: int, seed: int):
    feats, dice = [], []
    for i in range(n):
        _, truth = make_synthetic_lesion((64, 64), seed=seed + i)
        level = (i % 10) / 9
        views = fake_views(truth, level, seed + i)
        f = quality_features(views)
        feats.append(f)
        dice.append(_dice(views[0] > 0.5, truth))
    return feats, np.array(dice)


def test_features_see_disagreement():
    _, truth = make_synthetic_lesion((64, 64), seed=1)
    good = quality_features(fake_views(truth, 0.0, 1))
    bad = quality_features(fake_views(truth, 1.0, 1))
    assert set(good) == set(FEATURE_NAMES)
    assert good["tta_dice"] > 0.98 > bad["tta_dice"]
    assert good["border_entropy"] < bad["border_entropy"]
    assert good["empty"] == 0.0


def test_calibrated_model_ranks_degraded_masks_lower_and_round_trips():
    feats, dice = synthetic_cases(60, 100)
    model = QualityModel.fit(feats, dice)
    test_feats, test_dice = synthetic_cases(30, 500)
    pred = model.predict(test_feats)
    assert ((pred >= 0) & (pred <= 1)).all()
    assert stats.spearmanr(pred, test_dice).statistic > 0.7
    assert pred[np.argmin(test_dice)] < pred[np.argmax(test_dice)]
    again = QualityModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict(test_feats), pred)
    value, calibrated = predicted_dice(test_feats[0], model.to_dict())
    assert calibrated and value == pytest.approx(pred[0])


def test_without_calibration_the_score_is_the_plain_tta_dice():
    feats, _ = synthetic_cases(3, 7)
    assert predicted_dice(feats[1], {}) == (feats[1]["tta_dice"], False)
    assert predicted_dice(feats[1], None) == (feats[1]["tta_dice"], False)


def test_an_empty_mask_goes_to_the_top_of_the_queue():
    # Views that all find nothing agree perfectly: the empty mask got a high predicted Dice
    # (0.91 on a uniform image) and sank to the bottom of the queue, the last to be looked at.
    feats, dice = synthetic_cases(60, 100)
    calibration = QualityModel.fit(feats, dice).to_dict()
    nothing = np.full((8, 32, 32), 0.01, np.float32)
    assert quality_features(nothing)["tta_dice"] == 1.0  # the plain score calls it perfect
    estimate = estimate_from_views("blank", nothing, None, calibration)
    assert estimate.predicted_dice == 0.0 and estimate.calibrated
    assert estimate_from_views("blank", nothing, np.zeros((64, 64), bool), {}).predicted_dice == 0.0
    # a lesion too small to survive the resize to the working size is still a lesion
    speck = np.zeros((640, 640), bool)
    speck[300:303, 300:303] = True
    assert estimate_from_views("speck", nothing, speck, {}).predicted_dice > 0.0
    queue = rank([estimate, QualityEstimate("fine", 0.8, True)])
    assert [e.id for e in queue] == ["blank", "fine"]


def test_old_metadata_without_quality_still_loads(tiny_config):
    meta = ModelMetadata(config=tiny_config)
    data = json.loads(meta.to_json())
    del data["quality"]
    assert ModelMetadata.from_json(json.dumps(data)).quality == {}
    meta.quality = {"kind": "x"}
    assert ModelMetadata.from_json(meta.to_json()).quality == {"kind": "x"}


def _estimates(n=5):
    out = []
    for i in range(n):
        image, truth = make_synthetic_lesion((48, 64), seed=i)
        e = estimate_from_views(f"img{i}", fake_views(truth[:, :48], i / n, i), None, None)
        from napari_skinseg.review import outline_thumbnail
        e.thumbnail = outline_thumbnail(image, truth)
        out.append(e)
    return out


def test_rank_is_worst_first():
    es = [QualityEstimate("b", 0.9, True), QualityEstimate("a", 0.5, True),
          QualityEstimate("c", 0.7, True)]
    assert [e.id for e in rank(es)] == ["a", "c", "b"]


def test_review_files(tmp_path):
    estimates = _estimates(5)
    csv_path, html_path = write_review(estimates, tmp_path / "out")
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("rank,id,predicted_dice") and len(lines) == 6
    rows = list(csv.DictReader(open(csv_path)))
    values = [float(r["predicted_dice"]) for r in rows]
    assert values == sorted(values) and all(0 <= v <= 1 for v in values)
    assert {r["id"] for r in rows} == {e.id for e in estimates}
    assert rows[0]["calibrated"] == "no" and "tta_dice" in rows[0]
    try:
        import pandas as pd
    except ImportError:
        pass
    else:
        frame = pd.read_csv(csv_path)
        assert list(frame["id"]) == [r["id"] for r in rows]
    page = html_path.read_text()
    assert page.count("<img ") == 5 and page.count('src="data:image/png;base64,') == 5
    assert page.index(rows[0]["id"] + '"') < page.index(rows[-1]["id"] + '"')
    assert "http" not in page  # self-contained


def test_estimate_quality_uses_the_models_calibration(tiny_model_path, tmp_path):
    from napari_skinseg.prediction import Segmenter

    segmenter = Segmenter(load_model(tiny_model_path), device="cpu")
    image, _ = make_synthetic_lesion((80, 96), seed=3)
    plain = estimate_quality(segmenter, image, id="x", thumbnail=True)
    assert not plain.calibrated and 0 <= plain.predicted_dice <= 1
    assert plain.predicted_dice == plain.features["tta_dice"]
    assert plain.thumbnail is not None and plain.thumbnail.ndim == 3
    feats, dice = synthetic_cases(40, 900)
    segmenter.model.metadata.quality = QualityModel.fit(feats, dice).to_dict()
    path = segmenter.model.save(tmp_path / "calibrated.pt")
    again = Segmenter(load_model(path), device="cpu")
    calibrated = estimate_quality(again, image)
    assert calibrated.calibrated and 0 <= calibrated.predicted_dice <= 1


def test_both_engines_give_the_same_views_and_estimate(tiny_model_path, tmp_path):
    """The review queue runs on the engine that segments (ONNX Runtime on a CPU, no torch); its
    eight views are the image's flips/rotations, each turned back."""
    from napari_skinseg.engines import make_segmenter
    from napari_skinseg.prediction import Segmenter
    from napari_skinseg.tta import predict_views

    model = load_model(tiny_model_path)
    feats, dice = synthetic_cases(40, 901)
    model.metadata.quality = QualityModel.fit(feats, dice).to_dict()
    path = model.save(tmp_path / "calibrated.pt")
    torch_ = Segmenter(load_model(path), device="cpu")
    onnx = make_segmenter(path, engine="onnx")
    size = torch_.size
    image, _ = make_synthetic_lesion((size, size), seed=4)  # at the working size: no resizing
    views = predict_views(onnx, image)
    assert views.shape == (8, size, size)
    assert np.abs(views - predict_views(torch_, image)).max() < 1e-3
    assert np.abs(views[0] - onnx.predict_probability(image)).max() < 1e-5  # view 0: plain
    turned = predict_views(onnx, np.rot90(image))  # view k=1 of the image is the plain view of
    assert np.abs(np.rot90(views[1]) - turned[0]).max() < 1e-4  # its rotation, turned back
    mirrored = predict_views(onnx, image[:, ::-1])
    assert np.abs(views[4][:, ::-1] - mirrored[0]).max() < 1e-4  # view 4: the left-right flip
    a, b = estimate_quality(torch_, image), estimate_quality(onnx, image)
    assert a.calibrated and b.calibrated and abs(a.predicted_dice - b.predicted_dice) < 1e-3


def test_segment_review_writes_a_sorted_queue(tmp_path, synthetic_folder, tiny_model_path, capsys):
    from napari_skinseg.cli import main

    images, _ = synthetic_folder
    results = tmp_path / "Results"
    assert main(["segment", str(images), str(results), "--model", str(tiny_model_path),
                 "--device", "cpu", "--review"]) == 0
    assert "review queue of 6 images" in capsys.readouterr().out
    rows = list(csv.DictReader(open(results / "review.csv")))
    values = [float(r["predicted_dice"]) for r in rows]
    assert len(rows) == 6 and values == sorted(values)
    assert {r["id"] for r in rows} == {p.stem for p in images.iterdir()}
    assert (results / "review.html").read_text().count("<img ") == 6
    # A rerun keeps the masks on disk (perhaps corrected by a person) and reviews those.
    (results / "review.csv").unlink()
    assert main(["segment", str(images), str(results), "--model", str(tiny_model_path),
                 "--device", "cpu", "--review"]) == 0
    assert len(list(csv.DictReader(open(results / "review.csv")))) == 6


@pytest.mark.parametrize("name", ["review.csv", "review.html"])
def test_segment_review_never_replaces_a_file_it_did_not_write(tmp_path, synthetic_folder, name,
                                                               capsys):
    # a person's own review.csv in the results folder was silently replaced, while a foreign
    # measurements.csv was refused
    from napari_skinseg.cli import main
    from napari_skinseg.review import check_review_files, write_review

    images, _ = synthetic_folder
    results = tmp_path / "Results"
    results.mkdir()
    (results / name).write_text("my own notes\n")
    assert main(["segment", str(images), str(results), "--review"]) == 2
    assert "is not a review queue written by skinseg" in capsys.readouterr().err
    assert (results / name).read_text() == "my own notes\n"
    assert not list(results.glob("*_segmentation.png"))  # refused before any work
    # a queue this package wrote is its own, replaced by every rerun
    own = tmp_path / "own"
    write_review([], own)
    check_review_files(own)


def test_a_kept_mask_that_cannot_be_reviewed_is_named_not_dropped(tmp_path, synthetic_folder,
                                                                   tiny_model_path, capsys):
    # a rerun with --review left images whose kept mask was damaged or of another size out of
    # review.csv without a word (and exited 0): the person never saw them
    import numpy as np

    from napari_skinseg.cli import main
    from napari_skinseg.image_io import write_mask

    images, _ = synthetic_folder
    results = tmp_path / "Results"
    args = ["segment", str(images), str(results), "--model", str(tiny_model_path), "--device", "cpu"]
    assert main(args) == 0
    masks = sorted(results.glob("*_segmentation.png"))
    masks[0].write_bytes(b"damaged")
    write_mask(masks[1], np.zeros((10, 10), bool), overwrite=True)
    capsys.readouterr()
    assert main([*args, "--review"]) == 1
    out = capsys.readouterr().out
    assert "review queue of 4 images" in out
    assert out.count("not reviewed: ") == 2 and f"{masks[0].name}: not a readable image" in out
    assert "mask is 10x10" in out
    assert len(list(csv.DictReader(open(results / "review.csv")))) == 4


def test_review_and_click_modules_stay_torch_free():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "import napari_skinseg.review, napari_skinseg.quality, napari_skinseg.interactive\n"
            "from napari_skinseg.interactive import ClickSession\n"
            "from napari_skinseg.review import outline_thumbnail\n"
            "s = ClickSession(np.zeros((32, 32, 3), np.uint8), probability=np.zeros((32, 32)))\n"
            "s.click(5, 5, lesion=True); outline_thumbnail(np.zeros((32, 32, 3), np.uint8), s.mask)\n"
            "assert 'torch' not in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_fine_tuned_model_does_not_inherit_the_calibration(tmp_path, tiny_samples, tiny_config):
    from napari_skinseg.bundled import bundled_model_path
    from napari_skinseg.model import load_model
    from napari_skinseg.training import run_training

    assert load_model(bundled_model_path()).metadata.quality  # the bundled model is calibrated
    result = run_training(tiny_samples, tiny_config.replace(size=64), tmp_path / "ft.pt",
                          init=bundled_model_path())
    assert result.model.metadata.quality == {}  # its errors are another model's: not claimed


def test_int8_masks_are_judged_on_fp32_views(tiny_model_path, tmp_path, monkeypatch):
    """The calibration was fitted on fp32 views, so where auto segments with the int8 copy the
    review queue (napari's worst-first ranking, like `segment --review`) judges the int8 mask,
    the one Curate shows, on the fp32 network's views."""
    from napari_skinseg import onnx_quantize, worker_jobs
    from napari_skinseg.engines import make_reviewer, make_segmenter
    from napari_skinseg.generators import drain
    from napari_skinseg.image_io import read_image, write_image

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: (10.0, 5.0))  # int8 faster
    monkeypatch.setattr(worker_jobs, "_SEGMENTERS", {})
    int8 = make_segmenter(tiny_model_path, engine="auto")
    fp32 = make_reviewer(int8, tiny_model_path)
    assert (int8.engine, fp32.engine) == ("onnx-int8", "onnx")
    assert make_reviewer(fp32, tiny_model_path) is fp32
    paths = []
    for seed in (5, 6):
        image, _ = make_synthetic_lesion((72, 90), seed=seed)
        paths.append(str(write_image(tmp_path / f"{seed}.png", image)))
    rows = []
    assert drain(worker_jobs.job_review_folder(lambda: False, paths, str(tiny_model_path),
                                               "cpu"), rows.append) == 2
    for path, row in zip(paths, rows):
        image = read_image(path)
        expected = estimate_quality(fp32, image, int8.segment(image).mask)
        assert row["predicted_dice"] == pytest.approx(expected.predicted_dice, abs=1e-6)
