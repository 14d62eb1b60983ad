"""Widget tests: created through the npe2 manifest, driven like a user, real thread workers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_skinseg._widgets import curate_widget, segment_widget, train_widget, workers
from napari_skinseg._widgets.state import MODEL
from napari_skinseg.image_io import read_mask
from napari_skinseg.model import load_model
from napari_skinseg.synthetic import make_synthetic_lesion, write_synthetic_dataset

PLUGIN = "napari-skinseg"


@pytest.fixture(autouse=True)
def fresh_model_state():
    MODEL.path, MODEL._cache = None, None
    yield
    MODEL.path, MODEL._cache = None, None


@pytest.fixture
def errors(monkeypatch):
    """Error notifications the widgets show, collected instead of popping up."""
    shown: list[str] = []
    for module in (train_widget, segment_widget, curate_widget, workers):
        monkeypatch.setattr(module, "show_error", shown.append)
    return shown


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def add_pairs(viewer, n=3, shape=(96, 96)):
    for i in range(n):
        image, mask = make_synthetic_lesion(shape, seed=20 + i)
        viewer.add_image(image, name=f"lesion{i}", rgb=True)
        viewer.add_labels(mask.astype(np.uint8), name=f"lesion{i} mask")


def test_manifest_is_valid_and_offers_everything():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()  # what `npe2 validate napari-skinseg` checks
    assert {w.display_name for w in manifest.contributions.widgets} == {"Train", "Segment", "Curate"}
    assert [s.key for s in manifest.contributions.sample_data] == ["synthetic_lesion"]


def test_sample_data_opens_an_image_and_its_mask(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_lesion")
    assert viewer.layers["synthetic lesion"].data.shape == (512, 512, 3)
    assert viewer.layers["synthetic lesion mask"].data.max() == 1


def test_train_on_layers_through_the_worker(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    add_pairs(viewer)
    widget = dock(viewer, "Train")
    widget.labels_layers.value = ["lesion0 mask", "lesion1 mask", "lesion2 mask"]
    widget.epochs.value, widget.size.value, widget.start_from.value = 2, 128, "scratch"
    widget.output.value = tmp_path / "gui.pt"
    widget.start_button.native.click()
    assert widget.start_button.text == "Cancel"  # the GUI thread is free while it trains
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=120_000)
    assert errors == []
    assert widget.controller.result is not None and not widget.controller.result.cancelled
    assert len(widget.plot.history) == 2  # the live plot saw both epochs
    assert MODEL.path == tmp_path / "gui.pt" and load_model(MODEL.path).metadata.epochs_completed == 2
    assert widget.command.value.startswith("skinseg train ")
    assert "--epochs 2" in widget.command.value and str(tmp_path / "gui_data" / "images") in widget.command.value
    assert len(list((tmp_path / "gui_data" / "masks").iterdir())) == 3


def test_cancel_leaves_a_usable_model(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    add_pairs(viewer, n=4)
    widget = dock(viewer, "Train")
    widget.labels_layers.value = [f"lesion{i} mask" for i in range(4)]
    widget.epochs.value, widget.size.value, widget.batch_size.value = 200, 128, 1
    widget.start_from.value = "scratch"
    widget.output.value = tmp_path / "cancel.pt"
    widget.start_button.native.click()
    qtbot.waitUntil(lambda: len(widget.plot.history) >= 1, timeout=120_000)
    widget.start_button.native.click()  # Cancel
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=60_000)
    assert widget.start_button.text == "Start training"
    result = widget.controller.result
    assert result.cancelled and 1 <= len(result.history) < 200
    model = load_model(tmp_path / "cancel.pt")
    assert model.metadata.status == "cancelled" and model.metadata.best_epoch >= 1


def test_training_errors_become_notifications(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Train")
    widget.output.value = tmp_path / "x.pt"
    widget.start_button.native.click()
    assert "select at least one Labels layer" in errors[-1]
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="a", rgb=True)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="b", rgb=True)
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="a mask")
    viewer.add_labels(np.ones((32, 32), np.uint8), name="b mask")
    widget.reset_choices()
    widget.labels_layers.value = ["a mask"]
    widget.start_button.native.click()
    assert "no lesion painted in 'a mask'" in errors[-1]
    widget.labels_layers.value = ["b mask"]
    widget.start_button.native.click()
    assert "image is 64x64 but its labels are (32, 32)" in errors[-1]
    assert not widget.controller.running and not (tmp_path / "x.pt").exists()


def test_segment_layers_rethreshold_and_measure(make_napari_viewer, qtbot, tmp_path, tiny_model_path, errors):
    MODEL.set(tiny_model_path)
    viewer = make_napari_viewer()
    image, truth = make_synthetic_lesion((90, 120), seed=60)
    viewer.add_image(image, name="skin", rgb=True)
    widget = dock(viewer, "Segment")
    widget.images.value = ["skin"]
    widget.probabilities.value = True
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: "skin prediction" in viewer.layers and widget.worker is None, timeout=60_000)
    labels = viewer.layers["skin prediction"]
    assert labels.data.shape == (90, 120) and set(np.unique(labels.data)) <= {0, 1}
    assert "skin probability" in viewer.layers
    dice = 2 * (labels.data.astype(bool) & truth).sum() / (labels.data.astype(bool).sum() + truth.sum())
    assert dice > 0.7
    assert labels.features["area_px"][0] == labels.data.sum()  # measured as a napari feature
    assert "compactness" in [row[0] for row in widget.measurements.table.data.to_list()]  # in the dock
    before = labels.data.sum()
    widget.post.threshold.value = 0.95  # re-applied from stored probabilities, no network run
    assert labels.data.sum() < before
    edited = labels.data.copy()
    edited[:5, :5] = 1
    labels.data = edited
    widget.post.threshold.value = 0.3
    assert np.array_equal(labels.data, edited)  # a hand-corrected mask is never re-thresholded
    assert "edited by hand" in widget.status.value and errors == []
    assert labels.features["area_px"][0] == edited.sum()  # re-measured after the correction
    widget.measurements.csv_path.value = tmp_path / "m.csv"
    assert widget.measurements.export() == tmp_path / "m.csv"
    assert "skin," in (tmp_path / "m.csv").read_text() and errors == []


def test_segment_folder_from_the_widget(make_napari_viewer, qtbot, tmp_path, tiny_model_path, errors):
    MODEL.set(tiny_model_path)
    images_dir, _ = write_synthetic_dataset(tmp_path / "data", 3, (64, 80), seed=5)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Segment")
    widget.input_dir.value, widget.results_dir.value = images_dir, tmp_path / "Results"
    widget.folder_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and "segmented" in widget.status.value, timeout=60_000)
    assert len(list((tmp_path / "Results").glob("*_segmentation.png"))) == 3
    assert len(list((tmp_path / "Results").glob("*_overlay.png"))) == 3
    assert errors == []


def test_segment_without_image_or_with_bad_model_file(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Segment")
    widget.segment_button.native.click()
    assert "select an image layer" in errors[-1]
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="x", rgb=True)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    widget.model.choice.value, widget.model.file.value = "model file", tmp_path / "bad.pt"
    widget.images.value = ["x"]
    widget.segment_button.native.click()
    assert "bad.pt is not a readable napari-skinseg model file" in errors[-1]


def test_curate_save_next_and_retrain(make_napari_viewer, qtbot, tmp_path, tiny_model_path, errors):
    MODEL.set(tiny_model_path)
    source, _ = write_synthetic_dataset(tmp_path / "todo", 3, (80, 80), seed=9)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    widget.source_dir.value = source
    answers = []
    widget.confirm_overwrite = lambda message: answers.append(message) or answers_value[0]
    answers_value = [False]

    # Next image: opens the first uncurated image and segments it with the current model.
    widget.next_button.native.click()
    first = sorted(source.iterdir())[0].stem
    qtbot.waitUntil(lambda: f"{first} prediction" in viewer.layers and widget.worker is None, timeout=60_000)
    labels = viewer.layers[f"{first} prediction"]
    assert labels.mode == "paint" and widget.labels_layer.value == labels.name

    # The user corrects the mask, then saves it: image + 0/255 mask round-trip.
    corrected = np.zeros_like(labels.data)
    corrected[20:50, 10:60] = 1
    labels.data = corrected
    widget.save_button.native.click()
    saved = read_mask(tmp_path / "curated" / "masks" / f"{first}_segmentation.png")
    assert np.array_equal(saved, corrected > 0)
    assert (tmp_path / "curated" / "images" / f"{first}.png").exists()
    assert widget.count.value.startswith("1 curated pair ")

    # Saving again asks first; "no" keeps the file, "yes" replaces it.
    labels.data = np.zeros_like(corrected)
    widget.save_button.native.click()
    assert len(answers) == 1 and read_mask(tmp_path / "curated" / "masks" / f"{first}_segmentation.png").any()
    answers_value[0] = True
    labels.data = corrected * 0 + (np.arange(80)[None, :] < 40)
    widget.save_button.native.click()
    assert read_mask(tmp_path / "curated" / "masks" / f"{first}_segmentation.png")[:, :40].all()

    # Next image skips the curated one.
    widget.next_button.native.click()
    second = sorted(source.iterdir())[1].stem
    qtbot.waitUntil(lambda: f"{second} prediction" in viewer.layers and widget.worker is None, timeout=60_000)
    widget.save_button.native.click()
    assert widget.update_count() == 2

    # Retrain on the curated pairs, continuing from the current model.
    widget.start_from.value, widget.epochs.value = "current model", 1
    widget.retrain_button.native.click()
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=120_000)
    assert errors == []
    result = widget.controller.result
    assert result is not None and MODEL.path == result.model_path
    assert result.model.metadata.started_from == str(tiny_model_path)
    assert result.model.metadata.config.learning_rate == curate_widget.FINE_TUNE_LR
    assert len(widget.plot.history) == 1


def test_curate_errors(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    widget.save_button.native.click()
    assert "no labels layer to save" in errors[-1]
    widget.retrain_button.native.click()
    assert "at least 2 curated pairs" in errors[-1]
    widget.next_button.native.click()
    assert "choose the folder of images" in errors[-1]
