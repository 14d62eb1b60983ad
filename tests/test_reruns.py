"""Class 2: interrupted and repeated folder runs complete what is missing, keep corrected masks,
and two runs into one results folder both finish."""

import csv
import shutil
import threading

import numpy as np
import pytest

from napari_skinseg.cli import main
from napari_skinseg.folder_segmentation import OVERLAY_COLOUR, segment_folder
from napari_skinseg.image_io import read_image, read_mask, write_mask
from napari_skinseg.pairs import mask_filename, overlay_filename
from napari_skinseg.prediction import Segmenter


@pytest.fixture
def images(tmp_path, synthetic_folder):
    return shutil.copytree(synthetic_folder[0], tmp_path / "images")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rerun_completes_overlays_probabilities_and_rows_and_keeps_corrected_masks(
        tmp_path, images, tiny_model_path, capsys):
    results = tmp_path / "Results"
    model = ["--model", str(tiny_model_path)]
    assert main(["segment", str(images), str(results), *model]) == 0
    stems = sorted(p.stem for p in images.iterdir())
    corrected = results / mask_filename(stems[0])
    square = np.zeros((96, 128), bool)
    square[20:60, 30:90] = True
    write_mask(corrected, square, overwrite=True)  # a person corrected this mask
    before = corrected.read_bytes()
    (results / mask_filename(stems[1])).unlink()  # and this one was never written
    capsys.readouterr()
    full = ["segment", str(images), str(results), *model, "--overlay", "--probabilities",
            "--measure", "--pixel-size-mm", "0.1"]
    assert main(full) == 0
    out = capsys.readouterr().out
    assert "1 segmented, 5 completed" in out and "6 rows added" in out
    assert corrected.read_bytes() == before
    for stem in stems:
        for kind in ("segmentation", "overlay", "probability"):
            assert (results / f"{stem}_{kind}.png").exists()
    overlay = read_image(results / overlay_filename(stems[0]))
    outline = (overlay == OVERLAY_COLOUR).all(axis=-1)
    assert outline[20, 30:90].all() and not outline[~square].any()  # drawn from the kept mask
    rows = {r["id"]: r for r in _rows(results / "measurements.csv")}
    assert sorted(rows) == stems and float(rows[stems[0]]["area_px"]) == square.sum()
    # a third run has nothing to do and changes nothing
    snapshot = {p.name: p.read_bytes() for p in results.iterdir()}
    assert main(full) == 0
    assert "0 segmented, 6 kept" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in results.iterdir()} == snapshot


def test_a_rerun_with_another_pixel_size_measures_the_kept_masks_again(tmp_path, images,
                                                                       tiny_model_path, capsys):
    # The rows of the first pixel size were kept beside new ones: one table, two units.
    results = tmp_path / "Results"
    run = ["segment", str(images), str(results), "--model", str(tiny_model_path), "--measure"]
    assert main([*run, "--pixel-size-mm", "0.1"]) == 0
    stems = sorted(p.stem for p in images.iterdir())
    corrected = results / mask_filename(stems[0])
    square = np.zeros((96, 128), bool)
    square[20:60, 30:90] = True
    write_mask(corrected, square, overwrite=True)  # a person corrected this mask since
    masks = {p.name: p.read_bytes() for p in results.glob("*_segmentation.png")}
    capsys.readouterr()
    assert main([*run, "--pixel-size-mm", "0.2"]) == 0
    rows = {r["id"]: r for r in _rows(results / "measurements.csv")}
    assert sorted(rows) == stems  # replaced, not added
    for row in rows.values():
        assert float(row["area_mm2"]) == pytest.approx(float(row["area_px"]) * 0.04, rel=1e-5)
    assert "6 rows made with another pixel size measured again" in capsys.readouterr().out
    assert float(rows[stems[0]]["area_px"]) == square.sum()  # from the mask on disk
    assert {p.name: p.read_bytes() for p in results.glob("*_segmentation.png")} == masks
    before = (results / "measurements.csv").read_bytes()
    assert main([*run, "--pixel-size-mm", "0.2"]) == 0  # the same size again: nothing to redo
    assert (results / "measurements.csv").read_bytes() == before
    assert "measured again" not in capsys.readouterr().out
    assert main(run) == 0  # no pixel size asked: the rows keep their millimetres
    assert (results / "measurements.csv").read_bytes() == before


def test_interrupted_run_keeps_its_rows_and_a_rerun_finishes(tmp_path, images, tiny_model_path,
                                                             monkeypatch, capsys):
    results = tmp_path / "R"
    real = Segmenter.segment
    calls = []

    def interrupted_at_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", interrupted_at_the_third)
    command = ["segment", str(images), str(results), "--model", str(tiny_model_path), "--overlay",
               "--measure", "--engine", "torch",  # the engine whose segment() is interrupted
               "--workers", "1"]  # one at a time: exactly two images are done when it stops
    assert main(command) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len(list(results.glob("*_overlay.png"))) == 2
    assert len(_rows(results / "measurements.csv")) == 2  # rows of the finished images are kept
    monkeypatch.undo()
    assert main(command) == 0
    assert "4 segmented, 2 kept" in capsys.readouterr().out
    rows = _rows(results / "measurements.csv")
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6


def test_two_runs_into_one_folder_both_finish(tmp_path, images, tiny_model_path, monkeypatch):
    results = tmp_path / "shared"
    real = Segmenter.segment
    barrier = threading.Barrier(2, timeout=30)
    first_call = threading.local()

    def in_step(self, *args, **kwargs):
        # Both runs have found the first image's outputs missing before either writes them:
        # the race that made one of them die.
        if not getattr(first_call, "done", False):
            first_call.done = True
            barrier.wait()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", in_step)
    codes = []

    def run():
        codes.append(main(["segment", str(images), str(results), "--model", str(tiny_model_path),
                           "--overlay", "--measure"]))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [0, 0]
    assert len(list(results.glob("*_segmentation.png"))) == 6
    for path in results.glob("*.png"):
        assert read_image(path).shape[:2] == (96, 128)
    rows = _rows(results / "measurements.csv")
    assert sorted(r["id"] for r in rows) == sorted(p.stem for p in images.iterdir())
    assert not [p for p in results.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("option", [["--pixel-size-mm", "-1"], ["--pixel-size-mm", "nan"],
                                    ["--threshold", "1.5"], ["--min-size", "-3"]])
def test_invalid_options_are_refused_before_anything_is_written(tmp_path, images, tiny_model_path,
                                                                option, capsys):
    results = tmp_path / "never"
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(images), str(results), "--model", str(tiny_model_path), "--measure",
              *option])
    assert exit_.value.code == 2 and option[0] in capsys.readouterr().err
    assert not results.exists()


def test_api_refuses_a_bad_pixel_size_before_writing(tmp_path, images, tiny_model_path):
    segmenter = Segmenter.from_file(tiny_model_path, device="cpu")
    with pytest.raises(ValueError, match="pixel size"):
        next(segment_folder(images, tmp_path / "r", segmenter, measurements=True, pixel_size_mm=-1))
    assert not (tmp_path / "r").exists()
    # and a mask on disk that cannot be read is reported, not silently replaced
    results = tmp_path / "r2"
    results.mkdir()
    broken = results / mask_filename(sorted(p.stem for p in images.iterdir())[0])
    broken.write_bytes(b"corrupt")
    outcomes = list(segment_folder(images, results, segmenter, overlay=True))
    assert outcomes[0].status == "failed" and "existing mask cannot be used" in outcomes[0].message
    assert broken.read_bytes() == b"corrupt"
    assert [o.status for o in outcomes[1:]] == ["written"] * 5
    assert read_mask(results / mask_filename(outcomes[1].path.stem)).shape == (96, 128)


def test_a_pipelined_run_writes_what_a_serial_run_writes(tmp_path, images, tiny_model_path):
    from napari_skinseg.folder_segmentation import segment_folder
    from napari_skinseg.generators import drain
    from napari_skinseg.prediction import Segmenter

    segmenter = Segmenter.from_file(tiny_model_path, device="cpu")
    serial = drain(segment_folder(images, tmp_path / "serial", segmenter, overlay=True))
    seen = []
    piped = drain(segment_folder(images, tmp_path / "piped", segmenter, overlay=True, workers=3),
                  lambda outcome: seen.append(outcome.path.name))
    assert seen == sorted(p.name for p in images.iterdir())  # the folder's order
    assert len(piped.written) == len(serial.written) == 6
    for out in sorted((tmp_path / "serial").iterdir()):
        assert out.read_bytes() == (tmp_path / "piped" / out.name).read_bytes()
    # a rerun follows the same rules: nothing to do, every image kept
    again = drain(segment_folder(images, tmp_path / "piped", segmenter, overlay=True, workers=3))
    assert len(again.existing) == 6 and not again.written


def test_stopping_a_pipelined_run_leaves_only_whole_files(tmp_path, images, tiny_model_path):
    from napari_skinseg.folder_segmentation import segment_folder
    from napari_skinseg.prediction import Segmenter

    gen = segment_folder(images, tmp_path / "R", Segmenter.from_file(tiny_model_path, device="cpu"),
                         overlay=True, workers=3)
    next(gen)
    gen.close()  # what Ctrl-C or a cancelled worker job does to the generator
    names = [p.name for p in (tmp_path / "R").iterdir()]
    assert names and not [n for n in names if n.startswith(".")]  # no temporary files
    masks = [n for n in names if n.endswith("_segmentation.png")]
    assert all(n.replace("_segmentation", "_overlay") in names for n in masks)  # whole images


class _HalfSegmenter:
    """Stands in for the network: the left half of every image is lesion."""

    def segment(self, image, post=None, tta=False):
        from napari_skinseg.segmentation import Segmentation

        prob = np.zeros(image.shape[:2], np.float32)
        prob[:, : image.shape[1] // 2] = 1
        return Segmentation(prob, prob > 0.5)


@pytest.mark.parametrize("overwrite", [False, True])
def test_images_with_the_same_name_never_share_or_overwrite_outputs(tmp_path, overwrite):
    from napari_skinseg.generators import drain
    from napari_skinseg.image_io import write_image

    images, results = tmp_path / "in", tmp_path / "out"
    write_image(images / "a.jpg", np.zeros((16, 24, 3), np.uint8))
    write_image(images / "a.png", np.zeros((24, 16, 3), np.uint8))  # another image, same id
    report = drain(segment_folder(images, results, _HalfSegmenter(), overlay=True,
                                  overwrite=overwrite))
    assert [o.path.name for o in report.written] == ["a.jpg"]
    assert [o.path.name for o in report.failed] == ["a.png"]
    assert "same name as a.jpg" in report.failed[0].message
    assert read_mask(results / mask_filename("a")).shape == (16, 24)  # a.jpg's, untouched


def test_a_file_name_that_is_not_utf8_is_measured_and_reviewed(tmp_path):
    from napari_skinseg.generators import drain
    from napari_skinseg.image_io import write_image
    from napari_skinseg.measurements import read_measurements_csv
    from napari_skinseg.review import QualityEstimate, write_review

    images, results = tmp_path / "in", tmp_path / "out"
    latin1 = "caf\udce9"  # b"caf\xe9.png": a Latin-1 name, as Python holds it
    for stem in (latin1, "b"):
        write_image(images / f"{stem}.png", np.zeros((16, 24, 3), np.uint8))
    drain(segment_folder(images, results, _HalfSegmenter(), measurements=True))
    assert {r["id"] for r in read_measurements_csv(results / "measurements.csv")} == {latin1, "b"}
    drain(segment_folder(images, results, _HalfSegmenter(), measurements=True))  # a rerun
    assert len(read_measurements_csv(results / "measurements.csv")) == 2
    csv_path, html_path = write_review([QualityEstimate(latin1, 0.5, True)], results)
    assert latin1 in csv_path.read_text(encoding="utf-8", errors="surrogateescape")
    assert "caf\\udce9" in html_path.read_text(encoding="utf-8")
