import math

import numpy as np
import pytest
from skimage import draw

from napari_skinseg.measurements import DISCLAIMER, measure_lesion, write_measurements_csv


def _disc(shape=(200, 200), centre=(100.3, 99.6), radius=50):
    mask = np.zeros(shape, bool)
    mask[draw.disk(centre, radius, shape=shape)] = True
    return mask


def test_disc_is_symmetric_and_compact():
    m = measure_lesion(_disc(), pixel_size_mm=0.1)
    assert m["n_components"] == 1
    assert m["equivalent_diameter_px"] == pytest.approx(100, abs=1)
    assert m["feret_diameter_max_px"] == pytest.approx(100, abs=2.5)
    assert m["compactness"] == pytest.approx(1, abs=0.03)
    assert m["solidity"] > 0.97
    assert m["asymmetry_major_axis"] < 0.02 and m["asymmetry_minor_axis"] < 0.02
    assert m["area_mm2"] == pytest.approx(m["area_px"] * 0.01)
    assert m["feret_diameter_max_mm"] == pytest.approx(m["feret_diameter_max_px"] * 0.1)


def test_ellipse_axes_and_feret_diameter():
    mask = np.zeros((200, 300), bool)
    mask[draw.ellipse(100, 150, 30, 60, rotation=np.deg2rad(30))] = True
    m = measure_lesion(mask)
    assert m["feret_diameter_max_px"] == pytest.approx(120, abs=2.5)
    assert m["equivalent_diameter_px"] == pytest.approx(2 * math.sqrt(30 * 60), abs=1)
    ramanujan = math.pi * (3 * 90 - math.sqrt((3 * 60 + 30) * (60 + 90)))
    assert m["perimeter_px"] == pytest.approx(ramanujan, rel=0.02)
    assert m["compactness"] == pytest.approx(ramanujan ** 2 / (4 * math.pi * math.pi * 30 * 60), rel=0.04)
    assert m["asymmetry_major_axis"] < 0.02 and m["asymmetry_minor_axis"] < 0.02
    assert math.isnan(m["area_mm2"])  # no pixel size given


def test_two_lobed_shape_is_asymmetric_across_its_minor_axis():
    mask = _disc((200, 300), (100, 100), 50) | _disc((200, 300), (100, 170), 30)
    m = measure_lesion(mask)
    assert m["n_components"] == 1
    assert m["asymmetry_major_axis"] < 0.02  # both lobes lie on the major axis
    assert m["asymmetry_minor_axis"] > 0.2
    assert m["solidity"] < 0.95 and m["compactness"] > 1.15


def test_uniform_colour_is_one_family_and_two_colours_are_two():
    mask = _disc()
    image = np.zeros((200, 200, 3), np.uint8)
    image[:] = (150, 100, 40)
    m = measure_lesion(mask, image)
    assert m["n_colours"] == 1 and m["colours"] == "light_brown" and m["fraction_light_brown"] == 1
    assert m["L_std"] == pytest.approx(0, abs=1e-6)
    image[:100] = (10, 10, 10)
    m = measure_lesion(mask, image)
    assert m["colours"] == "light_brown;black" and m["n_colours"] == 2
    assert m["fraction_black"] == pytest.approx(mask[:100].sum() / mask.sum())


def test_empty_and_disconnected_masks_are_defined(tmp_path):
    empty = measure_lesion(np.zeros((50, 50), bool), np.zeros((50, 50, 3), np.uint8))
    assert empty["area_px"] == 0 and empty["n_colours"] == 0 and math.isnan(empty["compactness"])
    two = _disc((200, 300), (60, 60), 20) | _disc((200, 300), (140, 240), 20)
    m = measure_lesion(two)
    assert m["n_components"] == 2 and m["feret_diameter_max_px"] > 200
    path = write_measurements_csv([{"id": "a", **empty}, {"id": "b", **m}], tmp_path / "m.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("id,n_components,area_px") and DISCLAIMER not in path.read_text()
    assert len(lines) == 3
    with pytest.raises(FileExistsError):
        write_measurements_csv([], path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pixel size"):
        measure_lesion(_disc(), pixel_size_mm=0)
    with pytest.raises(ValueError, match="image is"):
        measure_lesion(_disc(), np.zeros((10, 10, 3), np.uint8))


def test_rows_of_ids_starting_with_a_hash_are_kept_when_another_run_merges(tmp_path):
    from napari_skinseg.measurements import merge_measurements_csv, read_measurements_csv

    path = tmp_path / "measurements.csv"
    path.write_text("# an earlier version's comment line\nid,area_px\nold,3\n", encoding="utf-8")
    merge_measurements_csv([{"id": "#1", "area_px": 5}], path)
    merge_measurements_csv([{"id": "b", "area_px": 6}], path)  # another run, same folder
    assert [r["id"] for r in read_measurements_csv(path)] == ["old", "#1", "b"]
