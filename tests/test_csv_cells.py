"""CSV files the tool writes never carry a spreadsheet formula (CSV injection), and the ids read
back from them (reruns) are the ids written."""

import csv

import pytest

from napari_skinseg.cli import main
from napari_skinseg.csv_cells import escape_cell, unescape_cell
from napari_skinseg.image_io import write_image, write_mask
from napari_skinseg.measurements import merge_measurements_csv, read_measurements_csv
from napari_skinseg.synthetic import make_synthetic_lesion

# Image names a spreadsheet would run as formulas, one that starts with a quote, and plain ones.
DANGEROUS = ['=HYPERLINK("x.example","y")', "+cmd", "-x", "@x", "\tt", "\rr"]
IDS = [*DANGEROUS, "'q", "plain", "1-2"]


def _raw_cells(path, column="id"):
    with open(path, newline="", encoding="utf-8") as fh:
        return [row[column] for row in csv.DictReader(fh)]


def _escaped(cell: str) -> bool:
    return cell.startswith("'") and cell[1:] in IDS


@pytest.mark.parametrize("text", IDS + ["", "''", "'=x"])
def test_unescape_undoes_escape(text):
    assert unescape_cell(escape_cell(text)) == text
    assert not escape_cell(text).startswith(("=", "+", "-", "@", "\t", "\r"))


def test_ids_that_look_like_formulas_are_escaped_and_survive_a_rerun(tmp_path, tiny_model_path,
                                                                     capsys):
    images, truth, results = tmp_path / "images", tmp_path / "truth", tmp_path / "Results"
    for i, image_id in enumerate(IDS):
        image, mask = make_synthetic_lesion((64, 64), seed=70 + i)
        write_image(images / f"{image_id}.png", image)
        write_mask(truth / f"{image_id}_segmentation.png", mask)
    run = ["segment", str(images), str(results), "--model", str(tiny_model_path), "--measure",
           "--review"]
    assert main(run) == 0
    measurements = results / "measurements.csv"
    for path in (measurements, results / "review.csv"):
        cells = _raw_cells(path)
        assert sorted(cells) == sorted(escape_cell(i) for i in IDS)
        assert all(_escaped(c) for c in cells if c[1:] in DANGEROUS + ["'q"])
        assert {"plain", "1-2"} <= set(cells)  # nothing else is touched
    assert {r["id"] for r in read_measurements_csv(measurements)} == set(IDS)
    before = measurements.read_bytes()
    capsys.readouterr()
    assert main(run) == 0  # a rerun finds every row by its id: none added, none repeated
    assert "0 rows added" in capsys.readouterr().out
    assert measurements.read_bytes() == before
    assert main(["evaluate", str(results), str(truth)]) == 0
    cells = _raw_cells(results / "evaluation.csv")
    assert sorted(cells) == sorted(escape_cell(i) for i in IDS)


def test_text_cells_are_escaped_and_numbers_stay_numbers_when_rows_are_merged(tmp_path):
    path = tmp_path / "m.csv"
    merge_measurements_csv([{"id": "-x", "area_px": 5, "a_mean": -3.25, "colours": "red"}], path)
    merge_measurements_csv([{"id": "@y", "area_px": 7, "a_mean": -1.5, "colours": "black"}], path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    # the first row was read back as text and written again: still escaped once, number bare
    assert [(r["id"], r["a_mean"], r["colours"]) for r in rows] == [
        ("'-x", "-3.25", "red"), ("'@y", "-1.5", "black")]
    assert [r["id"] for r in read_measurements_csv(path)] == ["-x", "@y"]
