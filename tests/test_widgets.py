"""Widget tests: docks created through the npe2 manifest, driven like a person, with the real
model worker process (napari's side never imports torch; see test_user_path.py for that)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_skinseg import cli
from napari_skinseg._widgets import (
    click_fix,
    curate_widget,
    fields,
    jobs,
    measurements_panel,
    retrain_on_curated,
    segment_widget,
    train_widget,
)
from napari_skinseg._widgets.fields import DISCARD, STAY
from napari_skinseg._widgets.layers import AUTO_HASH_KEY, mask_hash
from napari_skinseg._widgets.session import SESSION
from napari_skinseg.image_io import read_mask, write_image
from napari_skinseg.bundled import BUNDLED_MODEL_NAME
from napari_skinseg.model import load_model
from napari_skinseg.synthetic import make_synthetic_lesion, write_synthetic_dataset

PLUGIN = "napari-skinseg"
SLOW = 120_000


@pytest.fixture(autouse=True)
def fresh_session(qtbot):
    SESSION.model.reset()
    SESSION.post.set(SESSION.post.config.__class__())
    yield
    qtbot.waitUntil(lambda: not jobs.RUNNING, timeout=60_000)  # no thread outlives its test
    SESSION.model.reset()


@pytest.fixture
def errors(monkeypatch):
    """Error notifications the widgets show, collected instead of popping up."""
    shown: list[str] = []
    for module in (train_widget, segment_widget, curate_widget, jobs, measurements_panel,
                   click_fix):
        monkeypatch.setattr(module, "show_error", shown.append)
    return shown


def shown(widget) -> bool:
    """Whether a widget is meant to be seen (the test viewer's window itself is never shown)."""
    return not widget.native.isHidden()


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


def test_docks_fit_a_1080_pixel_screen(make_napari_viewer):
    viewer = make_napari_viewer()
    for name in ("Train", "Segment", "Curate"):
        widget = dock(viewer, name)
        assert type(widget.native).__name__ == "QScrollArea"  # what napari docks scrolls
        assert widget.native.minimumSizeHint().height() < 300


def test_docks_fit_napari_s_dock_width(make_napari_viewer):
    # Curate was 428 px at least (its click-kind combo as wide as "skin (wrongly taken)", nested
    # under a second label column) in a 378 px dock: "Save & next" and every status line's end
    # were cut off. Long layer names must not widen a dock either (the measure-layer combo).
    viewer = make_napari_viewer()
    name = "ISIC_0024431_a_long_file_name_from_the_dermoscope [1]"
    viewer.add_image(np.zeros((50, 50, 3), np.uint8), name=name, rgb=True)
    viewer.add_labels(np.zeros((50, 50), np.uint8), name=name + " prediction")
    for dock_name in ("Train", "Segment", "Curate"):
        widget = dock(viewer, dock_name)
        assert widget.native.widget().minimumSizeHint().width() <= 360, dock_name


def test_sample_data_opens_an_image_and_its_mask_in_truth_colours(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_lesion")
    assert viewer.layers["synthetic lesion"].data.shape == (512, 512, 3)
    mask = viewer.layers["synthetic lesion mask"]
    assert mask.data.max() == 1
    assert tuple(mask.colormap.map([1])[0][:3]) == (0.0, 1.0, 0.0)  # green; predictions magenta


def test_train_on_layers_through_the_worker(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    add_pairs(viewer)
    widget = dock(viewer, "Train")
    assert widget.start_from.choices == ("scratch", "bundled model", "model file")  # nothing trained yet
    widget.labels_layers.value = ["lesion0 mask", "lesion1 mask", "lesion2 mask"]
    widget.epochs.value, widget.size.value, widget.start_from.value = 2, 128, "scratch"
    widget.output.value = tmp_path / "gui.pt"
    widget.start_button.native.click()
    assert widget.start_button.text == "Cancel"  # the GUI thread is free while it trains
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=SLOW)
    assert errors == []
    summary = widget.controller.summary
    assert summary is not None and not summary.cancelled and summary.validated
    assert len(widget.controller.plot.history) == 2  # the live plot saw both epochs
    assert load_model(tmp_path / "gui.pt").metadata.epochs_completed == 2
    # Compared with the model in use (the bundled one) on the same validation pair.
    assert summary.baseline_name == BUNDLED_MODEL_NAME and summary.baseline_dice is not None
    assert f"vs {BUNDLED_MODEL_NAME}" in widget.controller.result_line.value
    if summary.val_dice < summary.baseline_dice:  # two epochs from scratch rarely win
        assert SESSION.model.is_bundled and shown(widget.controller.use_new)
        widget.controller.use_new.native.click()
    assert SESSION.model.path == tmp_path / "gui.pt"
    assert "gui.pt" in widget.model_line.value
    assert "model in use" in widget.start_from.choices  # offered once something was trained
    # The command repeats the run verbatim: absolute paths, an --out of its own.
    command = widget.command.value
    assert command.startswith("skinseg train ") and "--epochs 2" in command
    args = shlex.split(command)
    assert all(a.startswith("/") for a in args[2:4]) and args[args.index("--out") + 1].endswith("gui-repeat.pt")
    assert len(list((tmp_path / "gui_data" / "masks").iterdir())) == 3
    assert cli.main(args[1:]) == 0 and (tmp_path / "gui-repeat.pt").exists()


def test_layer_pairs_never_join_an_earlier_runs_pair_folder(tmp_path):
    # An earlier run's model was deleted or moved but its gui_data/ stayed: the new run took the
    # free name gui.pt, wrote its pairs into gui_data/ beside the old ones (or stopped on a
    # name they share) and trained on both.
    from napari_skinseg._widgets.train_widget import TrainWidget, free_path

    TrainWidget._export_layer_pairs([(*make_synthetic_lesion((32, 32), seed=1), "old")],
                                    tmp_path / "gui.pt")
    out = free_path(tmp_path / "gui.pt")
    assert out == tmp_path / "gui-2.pt"
    data = TrainWidget._export_layer_pairs(
        [(*make_synthetic_lesion((32, 32), seed=s), f"new{s}") for s in (2, 3)], out)
    assert sorted(p.name for p in data.images.iterdir()) == ["new2.png", "new3.png"]


def test_layer_pairs_whose_names_coincide_are_saved_as_separate_pairs(make_napari_viewer, tmp_path,
                                                                      monkeypatch):
    # Two images opened from files both named a.png, and an image called a_1: the pairs were
    # saved as a_0, a_1 and a_1, so Start stopped on "a_1.png exists".
    viewer = make_napari_viewer()
    masks = {}
    for i, (name, source) in enumerate([("a", "one/a.png"), ("a", "two/a.png"), ("a_1", None)]):
        image, mask = make_synthetic_lesion((48, 48), seed=40 + i)
        layer = viewer.add_image(image, name=name, rgb=True,
                                 metadata={"source_path": str(tmp_path / source)} if source else {})
        viewer.add_labels(mask.astype(np.uint8), name=f"{layer.name} mask")
        masks[layer.name] = mask
    assert [layer.name for layer in viewer.layers][::2] == ["a", "a [1]", "a_1"]  # napari's names
    widget = dock(viewer, "Train")
    widget.labels_layers.value = [f"{name} mask" for name in masks]
    widget.output.value = tmp_path / "m.pt"
    started = []
    monkeypatch.setattr(type(widget.controller), "start",  # the pairs, not a training
                        lambda self, *args, **kwargs: started.append(args))
    widget.start()
    images_dir, masks_dir = started[0][:2]
    assert sorted(p.name for p in images_dir.iterdir()) == ["a.png", "a_1.png", "a_2.png"]
    saved = {p.name: read_mask(p) for p in masks_dir.iterdir()}
    # each layer's own mask, under the name of its own image: a, then a_2, and a_1 kept
    for name, stem in zip(masks, ["a", "a_2", "a_1"]):
        assert np.array_equal(saved[f"{stem}_segmentation.png"], masks[name])


def start_long_training(make_napari_viewer, qtbot, out):
    """A Train dock running a long training from scratch, past its first batch."""
    viewer = make_napari_viewer()
    add_pairs(viewer, n=4)
    widget = dock(viewer, "Train")
    widget.labels_layers.value = [f"lesion{i} mask" for i in range(4)]
    widget.epochs.value, widget.size.value, widget.batch_size.value = 200, 128, 1
    widget.start_from.value = "scratch"
    widget.output.value = out
    widget.start_button.native.click()
    qtbot.waitUntil(lambda: widget.controller.progress_bar.value >= 1, timeout=SLOW)
    return viewer, widget


def test_cancel_before_the_first_validation_never_replaces_the_model(make_napari_viewer, qtbot, tmp_path, errors):
    viewer, widget = start_long_training(make_napari_viewer, qtbot, tmp_path / "cancel.pt")
    widget.start_button.native.click()  # Cancel, within the first epoch
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=60_000)
    assert widget.start_button.text == "Start training" and errors == []
    summary = widget.controller.summary
    assert summary.cancelled and not summary.validated
    assert SESSION.model.is_bundled  # the unmeasured model is not used
    assert "never measured" in widget.controller.result_line.value
    assert not shown(widget.controller.use_new)
    assert load_model(tmp_path / "cancel.pt").metadata.status == "cancelled"


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
    # An empty folder field is "nothing chosen", never the folder napari was started from.
    widget.source.value = "folder of curated pairs"
    widget.start_button.native.click()
    assert "choose the folder of curated pairs first" in errors[-1]
    assert widget.status.value == f"cannot start training: {errors[-1].split(': ', 1)[1]}"
    assert not widget.controller.running and not (tmp_path / "x.pt").exists()


def test_segment_rethreshold_measure_and_keep_hand_corrections(make_napari_viewer, qtbot, tmp_path,
                                                             tiny_model_path, errors):
    SESSION.model.use(tiny_model_path)
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
    assert viewer.layers["skin probability"].visible  # shown when asked for
    assert viewer.layers[-1] is labels and viewer.layers.selection.active is labels  # on top
    assert tuple(labels.colormap.map([1])[0][:3]) == (1.0, 0.0, 1.0)
    dice = 2 * (labels.data.astype(bool) & truth).sum() / (labels.data.astype(bool).sum() + truth.sum())
    assert dice > 0.7
    qtbot.waitUntil(lambda: "area_px" in labels.features)  # measured as a napari feature
    assert labels.features["area_px"][0] == labels.data.sum()
    table = widget.measurements.table.native
    shown_texts = [table.itemDelegate().displayText(table.item(r, 1).data(0), table.locale())
                   for r in range(table.rowCount())]
    names = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert "area (px²)" in names and "perimeter (px)" in names
    assert not any("e+" in t or re.search(r"\.\d{4}$", t) for t in shown_texts)  # no 936.9000
    before = labels.data.sum()
    widget.post.threshold.value = 0.95  # re-applied from stored probabilities, no network run
    assert labels.data.sum() < before
    labels.paint((5, 5), 1)  # a correction with the brush ...
    edited = labels.data.copy()
    qtbot.waitUntil(lambda: labels.features["area_px"][0] == edited.sum())  # ... re-measured
    widget.post.threshold.value = 0.3
    assert np.array_equal(labels.data, edited)  # a hand-corrected mask is never re-thresholded
    assert "edited by hand" in widget.status.value and errors == []
    labels.undo()
    qtbot.waitUntil(lambda: labels.features["area_px"][0] == labels.data.sum() != edited.sum())
    labels.paint((5, 5), 1)
    # Segmenting again asks before replacing corrections; "no" keeps them.
    widget.confirm_replace = lambda message: False
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert np.array_equal(labels.data, edited) and "kept" in widget.status.value
    widget.confirm_replace = lambda message: True
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert not np.array_equal(labels.data, edited)
    widget.measurements.csv_path.value = tmp_path / "m.csv"
    assert widget.measurements.export() == tmp_path / "m.csv"
    assert "skin," in (tmp_path / "m.csv").read_text() and errors == []


def test_measuring_never_holds_up_painting(make_napari_viewer, qtbot, monkeypatch, errors, tmp_path):
    """A huge mask takes seconds to measure: painting goes on meanwhile, the newest mask is
    measured when that ends (not one measurement per stroke), and a new pixel size re-measures
    every layer, so an export never mixes units."""
    viewer = make_napari_viewer()
    release, measured = threading.Event(), []
    real = measurements_panel.measure_lesion

    def slow(mask, image, pixel):
        measured.append((int(mask.sum()), pixel))
        release.wait(20)
        return real(mask, image, pixel)

    monkeypatch.setattr(measurements_panel, "measure_lesion", slow)
    panel = measurements_panel.MeasurementsPanel(viewer)
    masks = []
    for name, seed in (("a", 1), ("b", 2)):
        image, truth = make_synthetic_lesion((64, 64), seed=seed)
        viewer.add_image(image, name=name, rgb=True)
        masks.append(viewer.add_labels(truth.astype(np.uint8), name=f"{name} prediction",
                                       metadata={AUTO_HASH_KEY: mask_hash(truth)}))
    a, b = masks
    qtbot.waitUntil(lambda: len(measured) == 2)  # both started, both held up
    for y in range(3):  # three strokes while 'a' is being measured
        a.paint((y, 0), 1)
        qtbot.wait(250)
    panel.csv_path.value = tmp_path / "m.csv"
    assert panel.export() is None and "still measuring 2 layer(s)" in errors[-1]
    panel.pixel_size.value = 0.02
    release.set()
    qtbot.waitUntil(lambda: all("area_mm2" in m.features and m.features["area_mm2"][0] > 0
                                for m in masks) and not panel._running, timeout=20_000)
    assert a.features["area_px"][0] == a.data.sum() and b.features["area_px"][0] == b.data.sum()
    # a and b once each at first, then each once more with the newest mask and pixel size
    assert sorted(measured[2:]) == sorted([(int(a.data.sum()), 0.02), (int(b.data.sum()), 0.02)])
    assert panel.export() == tmp_path / "m.csv"


def test_renaming_a_layer_keeps_it_chosen_under_its_new_name(make_napari_viewer, qtbot):
    # The lists kept the old name (no layer has it) or dropped the layer from what was chosen.
    viewer = make_napari_viewer()
    add_pairs(viewer, n=2, shape=(48, 48))
    segment, train = dock(viewer, "Segment"), dock(viewer, "Train")
    segment.images.value = ["lesion0", "lesion1"]
    train.labels_layers.value = ["lesion1 mask"]
    segment.measurements.layer.value = "lesion0 mask"
    viewer.layers["lesion0"].name = "patient 7"
    viewer.layers["lesion1 mask"].name = "patient 8 mask"
    viewer.layers["lesion0 mask"].name = "patient 7 mask"
    assert "patient 7" in segment.images.choices and "lesion0" not in segment.images.choices
    assert sorted(segment.images.value) == ["lesion1", "patient 7"]
    assert list(train.labels_layers.value) == ["patient 8 mask"]
    assert segment.measurements.layer.value == "patient 7 mask"


def test_an_export_tells_two_masks_of_one_image_apart(make_napari_viewer, qtbot, tmp_path, errors):
    # An image opened by hand and segmented, and the same image opened by Curate with its saved
    # mask: two rows "ISIC_0024431" with different numbers, and no way to tell which was which.
    from napari_skinseg.measurements import read_measurements_csv

    viewer = make_napari_viewer()
    panel = measurements_panel.MeasurementsPanel(viewer)
    image, truth = make_synthetic_lesion((64, 64), seed=1)
    for name, mask in (("a", truth), ("a [1]", truth & (np.arange(64) < 40)[None, :])):
        im = viewer.add_image(image, name=name, rgb=True, metadata={"source_path": "/x/a.jpg"})
        viewer.add_labels(mask.astype(np.uint8), name=f"{name} prediction",
                          metadata={AUTO_HASH_KEY: mask_hash(mask), "skinseg_image": str(im.unique_id)})
    qtbot.waitUntil(lambda: all("area_px" in layer.features for layer in viewer.layers
                                if layer.name.endswith("prediction")) and not panel._running)
    panel.csv_path.value = tmp_path / "m.csv"
    assert panel.export() == tmp_path / "m.csv"
    rows = read_measurements_csv(tmp_path / "m.csv")
    assert [(r["id"], r["layer"]) for r in rows] == [("a", "a prediction"), ("a", "a [1] prediction")]
    assert rows[0]["area_px"] != rows[1]["area_px"] and errors == []


def folder_dock(make_napari_viewer, tmp_path, n: int, seed: int, shape=(64, 64)):
    """The Segment dock with a folder of ``n`` synthetic images and a results folder chosen."""
    images_dir, _ = write_synthetic_dataset(tmp_path / "data", n, shape, seed=seed)
    widget = dock(make_napari_viewer(), "Segment")
    widget.input_dir.value, widget.results_dir.value = images_dir, tmp_path / "Results"
    return widget


def test_segment_folder_from_the_widget(make_napari_viewer, qtbot, tmp_path, tiny_model_path, errors,
                                       onnx_cache_dir):
    SESSION.model.use(tiny_model_path)
    widget = folder_dock(make_napari_viewer, tmp_path, 3, seed=5, shape=(64, 80))
    widget.model.engine.value = "onnx-int8"  # the engine list offers the quantised copy too
    for made_before in onnx_cache_dir.glob("*.int8.*"):
        made_before.unlink()
    widget.folder_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and "segmented" in widget.status.value, timeout=60_000)
    assert len(list((tmp_path / "Results").glob("*_segmentation.png"))) == 3
    assert len(list((tmp_path / "Results").glob("*_overlay.png"))) == 3
    assert list(onnx_cache_dir.glob("*.int8.onnx"))  # the worker made the int8 copy and used it
    assert errors == []


def test_segment_folder_again_names_the_docks_overwrite_option(make_napari_viewer, qtbot, tmp_path, errors):
    widget = folder_dock(make_napari_viewer, tmp_path, 2, seed=6)
    for _ in range(2):  # the second run keeps what the first wrote
        widget.folder_button.native.click()
        qtbot.waitUntil(lambda: widget.worker is None and "segmented" in widget.status.value,
                        timeout=60_000)
    assert widget.status.value == "0 segmented, 2 kept because their outputs exist (tick 'overwrite " \
                                  "existing')"  # a dock has no --overwrite
    assert errors == []


def test_a_folder_run_can_be_cancelled_from_the_dock(make_napari_viewer, qtbot, tmp_path, errors):
    # A folder of thousands of images could only be stopped by quitting napari.
    widget = folder_dock(make_napari_viewer, tmp_path, 40, seed=8)
    widget.folder_button.native.click()
    assert widget.folder_button.text == "Cancel folder run"
    widget.folder_button.native.click()  # the person changes their mind
    qtbot.waitUntil(lambda: widget.worker is None and "cancelled" in widget.status.value,
                    timeout=60_000)
    written = list((tmp_path / "Results").glob("*_segmentation.png"))
    assert len(written) < 40 and widget.folder_button.text == "Segment folder"
    widget.folder_button.native.click()  # a new run finishes the rest
    qtbot.waitUntil(lambda: widget.worker is None and "segmented" in widget.status.value,
                    timeout=60_000)
    assert len(list((tmp_path / "Results").glob("*_segmentation.png"))) == 40
    assert errors == []


def test_a_segmentation_answered_after_cancel_replaces_nothing(make_napari_viewer, qtbot,
                                                              monkeypatch, errors):
    # A result that came within the seconds a cancel waits for the job to end was shown all the
    # same: the prediction the person kept was replaced, and the line said "segmented".
    from napari_skinseg import worker_client
    from napari_skinseg._widgets.layers import PROBABILITY_KEY

    viewer = make_napari_viewer()
    viewer.add_image(make_synthetic_lesion((96, 96), seed=30)[0], name="skin", rgb=True)
    widget = dock(viewer, "Segment")
    widget.images.value = ["skin"]
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and "skin prediction" in viewer.layers,
                    timeout=SLOW)
    kept = viewer.layers["skin prediction"].metadata[PROBABILITY_KEY]
    monkeypatch.setattr(worker_client, "STOP_GRACE", 60.0)  # the answer comes before the end
    delivered = jobs.JobRunner._on_yielded

    def cancel_once_computing(runner, item):  # the worker has begun the image: it finishes it
        delivered(runner, item)
        if item[0] == "model":
            widget.segment_button.native.click()  # Cancel

    monkeypatch.setattr(jobs.JobRunner, "_on_yielded", cancel_once_computing)
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=SLOW)
    assert viewer.layers["skin prediction"].metadata[PROBABILITY_KEY] is kept
    assert widget.status.value == "segmentation cancelled after 0 of 1 image(s)" and errors == []


def test_segment_says_a_folder_run_keeps_it_busy_and_keeps_its_line(make_napari_viewer, qtbot,
                                                                    tmp_path, monkeypatch, errors):
    # Pressed during a folder run, Segment said "segmentation is already running"; and a
    # click-to-fix (or a stroke) on an earlier prediction replaced the folder run's line.
    widget = folder_dock(make_napari_viewer, tmp_path, 40, seed=8)
    viewer = widget.viewer
    viewer.add_image(make_synthetic_lesion((64, 64), seed=3)[0], name="skin", rgb=True)
    widget.images.value = ["skin"]
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and "skin prediction" in viewer.layers,
                    timeout=SLOW)
    warnings: list[str] = []
    monkeypatch.setattr(segment_widget, "show_warning", warnings.append)
    widget.folder_button.native.click()
    widget.segment_button.native.click()
    assert warnings == ['a folder run is going on: wait for it, or press "Cancel folder run"']
    layer, pixel = viewer.layers["skin prediction"], (np.array([3]), np.array([3]))
    layer.data_setitem(pixel, 1)  # as a click-to-fix writes it
    assert widget.status.value.startswith("segmenting ")
    qtbot.waitUntil(lambda: widget.worker is None, timeout=SLOW)
    summary = widget.status.value
    layer.data_setitem(pixel, 0)
    assert widget.status.value == summary and summary.startswith("40 segmented") and errors == []


@contextlib.contextmanager
def a_stopped_worker(qtbot):
    """The session's model worker stopped (SIGSTOP) as a hung process is: alive, silent."""
    qtbot.waitUntil(lambda: not jobs.RUNNING, timeout=60_000)  # the docks' own first jobs
    SESSION.client.ensure_started()
    process = SESSION.client._process
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield process
    finally:
        if process.poll() is None:  # not ended by the dock (a failing test): end it here
            process.kill()
            process.wait()


def test_segmenting_an_image_can_be_cancelled_when_the_worker_hangs(make_napari_viewer, qtbot,
                                                                     errors):
    # A worker that stops without dying kept the dock busy for ever: a second click only said
    # "segmentation is already running".
    viewer = make_napari_viewer()
    viewer.add_image(make_synthetic_lesion((96, 96), seed=30)[0], name="skin", rgb=True)
    viewer.add_image(np.zeros((2000, 2000, 3), np.uint8), name="photo", rgb=True)  # 12 MB
    widget = dock(viewer, "Segment")
    with a_stopped_worker(qtbot) as process:
        widget.images.value = ["photo"]
        widget.segment_button.native.click()
        assert widget.worker is not None
        # the model's first job in the session: a wait of seconds is announced
        assert widget.status.value.startswith("segmenting 1 image(s) ... (loading the model")
        widget.segment_button.native.click()  # Cancel
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
        assert process.poll() is not None  # the stopped worker was ended
    assert widget.segment_button.text == "Segment selected images"
    assert widget.status.value == "segmentation cancelled" and "photo prediction" not in viewer.layers
    widget.images.value = ["skin"]
    widget.segment_button.native.click()  # the dock works again, with a new worker
    qtbot.waitUntil(lambda: widget.worker is None and "skin prediction" in viewer.layers,
                    timeout=SLOW)
    widget.segment_button.native.click()  # the model is loaded now: no note of a wait
    assert widget.status.value == "segmenting 1 image(s) ..."
    qtbot.waitUntil(lambda: widget.worker is None, timeout=SLOW)
    assert errors == []


@pytest.fixture
def watched(monkeypatch):
    """The watchdog's pings every 0.2 s, its warning after ``silent_after`` s of silence, and the
    notifications it shows, collected: ``(warnings, infos, pings)``."""
    notes = SimpleNamespace(warnings=[], infos=[], pings=[])
    monkeypatch.setattr(jobs, "WATCH_EVERY", 0.2)
    monkeypatch.setattr(jobs, "SILENT_AFTER", 1.0)
    monkeypatch.setattr(jobs, "show_warning", notes.warnings.append)
    monkeypatch.setattr(jobs, "show_info", notes.infos.append)
    ping_nowait = SESSION.client.ping_nowait

    def counted():
        job = ping_nowait()
        notes.pings.append(job)
        return job

    monkeypatch.setattr(SESSION.client, "ping_nowait", counted)
    return notes


def test_a_worker_that_stops_answering_while_a_job_runs_is_announced_once(make_napari_viewer,
                                                                          qtbot, watched, errors):
    # A stopped or hung worker left every dock waiting without a word until the person happened
    # to press a Cancel button.
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2000, 2000, 3), np.uint8), name="photo", rgb=True)
    widget = dock(viewer, "Segment")
    with a_stopped_worker(qtbot) as process:
        widget.images.value = ["photo"]
        widget.segment_button.native.click()
        qtbot.waitUntil(lambda: bool(watched.warnings), timeout=5_000)  # 1 s of silence, then a tick
        qtbot.wait(2_000)  # twice the threshold more: said once
        assert len(watched.warnings) == 1 and watched.infos == []
        assert watched.warnings[0].startswith(
            f"the model worker (process {process.pid}) has not answered for 1 s: it may be "
            "stopped or hung.")
        assert "the Cancel button of the dock that waits ends it" in watched.warnings[0]
        assert process.poll() is None and widget.worker is not None  # never ended by itself
        assert len([p for p in watched.pings if p is not None]) == 1  # one ping at a time
        os.kill(process.pid, signal.SIGCONT)  # it was only slow: the job goes on
        qtbot.waitUntil(lambda: bool(watched.infos), timeout=10_000)
        assert watched.infos[0].startswith("the model worker answers again (after ")
        qtbot.waitUntil(lambda: widget.worker is None, timeout=SLOW)
    assert "photo prediction" in viewer.layers and len(watched.warnings) == 1
    assert len(watched.infos) == 1 and errors == []


def test_a_worker_ended_by_cancel_after_the_warning_says_nothing_more(make_napari_viewer, qtbot,
                                                                      watched, errors):
    viewer = make_napari_viewer()
    viewer.add_image(make_synthetic_lesion((96, 96), seed=30)[0], name="skin", rgb=True)
    widget = dock(viewer, "Segment")
    with a_stopped_worker(qtbot) as process:
        widget.images.value = ["skin"]
        widget.segment_button.native.click()
        qtbot.waitUntil(lambda: bool(watched.warnings), timeout=5_000)
        widget.segment_button.native.click()  # Cancel, as the warning says
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
        assert process.poll() is not None
    qtbot.wait(500)
    assert len(watched.warnings) == 1 and watched.infos == [] and errors == []
    assert widget.status.value == "segmentation cancelled"


def test_a_busy_worker_that_answers_raises_no_alarm(make_napari_viewer, qtbot, tmp_path,
                                                    monkeypatch, watched, errors):
    # A training at full CPU (with its model's first ONNX export for the comparison) answers
    # pings in milliseconds (at worst 0.6 s on 2 loaded cores); the threshold here is 2 s.
    monkeypatch.setattr(jobs, "SILENT_AFTER", 2.0)
    viewer = make_napari_viewer()
    add_pairs(viewer)
    widget = dock(viewer, "Train")
    widget.labels_layers.value = ["lesion0 mask", "lesion1 mask", "lesion2 mask"]
    widget.epochs.value, widget.size.value, widget.start_from.value = 3, 128, "scratch"
    widget.output.value = tmp_path / "busy.pt"
    widget.start_button.native.click()
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=SLOW)
    answered = [p for p in watched.pings if p is not None and p.end_kind == "done"]
    assert len(answered) >= 3  # it was watched all along
    assert watched.warnings == [] and watched.infos == [] and errors == []
    assert widget.controller.summary is not None and not widget.controller.summary.cancelled


def test_ranking_worst_first_can_be_cancelled_when_the_worker_hangs(make_napari_viewer, qtbot,
                                                                     tmp_path, errors):
    source, _ = write_synthetic_dataset(tmp_path / "todo", 3, (64, 64), seed=16)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    assert not shown(widget.cancel_button)
    with a_stopped_worker(qtbot) as process:
        widget.queue.order.value = "worst first (predicted Dice)"  # starts ranking the folder
        assert widget.worker is not None and shown(widget.cancel_button)
        assert widget.cancel_button.text == "Cancel ranking"
        # the model's first job in the session: Curate announces the wait too
        assert widget.status.value.startswith("ranking 3 images by predicted Dice ... (loading")
        widget.cancel_button.native.click()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
        assert process.poll() is not None
    assert not shown(widget.cancel_button) and widget.queue.predicted == {}
    assert widget.status.value.startswith("ranking cancelled after 0 of 3 images")
    widget.next_button.native.click()  # ranks with a new worker, then opens the worst image
    qtbot.waitUntil(lambda: widget.worker is None and len(widget.queue.predicted) == 3
                    and len(viewer.layers) == 2, timeout=SLOW)
    assert viewer.layers[0].name == min(widget.queue.predicted, key=widget.queue.predicted.get).stem
    assert SESSION.model.first_use_note() == "" and errors == []  # loaded: no more notes


def test_model_choice_checks_files_and_errors_read_plainly(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Segment")
    assert widget.model.choice.choices == ("bundled model", "model file")  # nothing trained yet
    widget.segment_button.native.click()
    assert "select an image layer" in errors[-1] and "select an image layer" in widget.status.value
    (tmp_path / "notes.txt").write_text("not a model")
    widget.model.choice.value, widget.model.file.value = "model file", tmp_path / "notes.txt"
    qtbot.waitUntil(lambda: len(errors) >= 2, timeout=60_000)
    assert "notes.txt is not a readable napari-skinseg model file" in errors[-1]
    assert "weights_only" not in errors[-1] and "Traceback" not in errors[-1]
    assert SESSION.model.is_bundled and "not changed" in widget.model.line.value


def _open_two_images(viewer):
    images = {}
    for i, name in enumerate(("first", "second")):
        image, _ = make_synthetic_lesion((64, 64), seed=70 + i)
        viewer.add_image(image, name=name, rgb=True)
        viewer.add_labels(np.zeros((64, 64), np.uint8), name=f"{name} mask")
        images[name] = image
    return images


def test_save_takes_the_layer_being_worked_on(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    _open_two_images(viewer)
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    second = viewer.layers["second mask"]
    second.data[10:30, 10:30] = 1
    viewer.layers.selection.active = viewer.layers["first"]  # the person clicks another image
    viewer.layers.selection.active = second  # ... then paints on the second one's mask
    assert "'second mask' as second" in widget.target.value
    widget.save_button.native.click()
    assert (tmp_path / "curated" / "masks" / "second_segmentation.png").exists()
    assert not (tmp_path / "curated" / "masks" / "first_segmentation.png").exists()
    assert "saved second" in widget.status.value and errors == []
    viewer.layers.selection.active = viewer.layers["first"]  # an image: its labels are saved
    widget.save_button.native.click()
    assert read_mask(tmp_path / "curated" / "masks" / "first_segmentation.png").sum() == 0


def test_curate_loop_never_loses_a_correction(make_napari_viewer, qtbot, tmp_path, tiny_model_path, errors):
    SESSION.model.use(tiny_model_path)
    source, _ = write_synthetic_dataset(tmp_path / "todo", 4, (80, 80), seed=9)
    names = sorted(p.stem for p in source.iterdir())
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    widget.source_dir.value = source
    answers = []
    widget.confirm_overwrite = lambda message: answers.append(message) or True

    def opened(name):
        return f"{name} prediction" in viewer.layers and widget.worker is None

    # Next image: opens the first image and segments it, prediction on top and ready to paint.
    widget.next_button.native.click()
    widget.next_button.native.click()  # a second click while it runs starts nothing
    qtbot.waitUntil(lambda: opened(names[0]), timeout=60_000)
    labels = viewer.layers[f"{names[0]} prediction"]
    assert viewer.layers[-1] is labels and labels.mode == "paint"
    assert [layer.name for layer in viewer.layers] == [names[0], labels.name]

    # A correction, then Next: the person is asked; "stay" keeps everything as it is.
    labels.paint((40, 40), 1)
    labels.paint((5, 5), 1)
    corrected = labels.data.copy()
    widget.ask_unsaved = lambda message: STAY
    widget.next_button.native.click()
    assert viewer.layers[f"{names[0]} prediction"] is labels and np.array_equal(labels.data, corrected)
    assert "unsaved corrections" in widget.target.value

    # Save & next in one step.
    widget.save_next_button.native.click()
    saved = read_mask(tmp_path / "curated" / "masks" / f"{names[0]}_segmentation.png")
    assert np.array_equal(saved, corrected > 0)
    qtbot.waitUntil(lambda: opened(names[1]), timeout=60_000)
    assert names[0] not in viewer.layers  # the finished image was closed

    # Discarding is a choice the person makes.
    viewer.layers[f"{names[1]} prediction"].paint((5, 5), 1)
    widget.ask_unsaved = lambda message: DISCARD
    widget.next_button.native.click()
    qtbot.waitUntil(lambda: opened(names[2]), timeout=60_000)
    assert not (tmp_path / "curated" / "masks" / f"{names[1]}_segmentation.png").exists()

    # Previous goes back; an image already curated comes back with its saved mask.
    widget.previous_button.native.click()
    qtbot.waitUntil(lambda: opened(names[1]), timeout=60_000)
    widget.previous_button.native.click()
    qtbot.waitUntil(lambda: opened(names[0]), timeout=60_000)
    assert np.array_equal(viewer.layers[f"{names[0]} prediction"].data > 0, saved)
    # the model's predicted Dice is not shown for a training mask saved earlier
    widget.queue.predicted[Path(viewer.layers[names[0]].metadata["source_path"])] = 0.84
    widget.update_target()
    assert "its saved training mask" in widget.target.value
    assert "predicted Dice" not in widget.target.value
    assert answers == [] and errors == []


def test_curate_swaps_images_in_one_scene_graph_update(make_napari_viewer, qtbot, tmp_path,
                                                      monkeypatch, errors):
    # napari cleans its scene graph (gc.collect, 0.2-0.3 s with real images open) after each
    # layer removed: Back (image, prediction, clicks out; image, mask in) froze napari 1.4 s.
    import gc

    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=17)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    first, second = (p.stem for p in sorted(source.iterdir()))
    widget.next_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and f"{first} prediction" in viewer.layers,
                    timeout=60_000)
    widget.save_next_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and f"{second} prediction" in viewer.layers,
                    timeout=60_000)
    viewer.layers.selection.active = viewer.layers[f"{second} prediction"]
    widget.click_fix.start_button.native.click()
    qtbot.waitUntil(lambda: not jobs.RUNNING, timeout=60_000)
    collections = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    widget.previous_button.native.click()
    assert [layer.name for layer in viewer.layers] == [first, f"{first} prediction"]
    assert len(collections) <= 1 and errors == []


def test_save_and_next_without_a_folder_to_curate_says_it_saved(make_napari_viewer, tmp_path,
                                                                 errors):
    # The mask was saved, but the status line showed only the error about the missing folder.
    viewer = make_napari_viewer()
    _open_two_images(viewer)
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    viewer.layers["first mask"].data[10:30, 10:30] = 1
    viewer.layers.selection.active = viewer.layers["first mask"]
    widget.save_next_button.native.click()
    assert (tmp_path / "curated" / "masks" / "first_segmentation.png").exists()
    assert widget.status.value.startswith("saved first") and "image folder" in widget.status.value
    assert errors == []


def test_next_on_the_last_uncurated_image_opens_it_again(make_napari_viewer, qtbot, tmp_path, errors):
    # e.g. its segmentation failed (the worker was killed) or its prediction was discarded
    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=17)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    widget.ask_unsaved = lambda message: DISCARD
    last = sorted(source.iterdir())[1].stem

    def next_opens(stem):
        widget.next_button.native.click()
        qtbot.waitUntil(lambda: widget.worker is None and f"{stem} prediction" in viewer.layers,
                        timeout=60_000)

    next_opens(sorted(source.iterdir())[0].stem)
    widget.save_next_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and f"{last} prediction" in viewer.layers, timeout=60_000)
    viewer.layers.remove(f"{last} prediction")
    next_opens(last)  # not "every image of that folder has a curated mask": it has none
    assert "every image" not in widget.status.value and widget.current.stem == last
    assert len(list((tmp_path / "curated" / "masks").iterdir())) == 1 and errors == []


def test_curate_uses_the_segment_settings(make_napari_viewer, qtbot, tmp_path, tiny_model_path, errors):
    SESSION.model.use(tiny_model_path)
    source, _ = write_synthetic_dataset(tmp_path / "todo", 1, (80, 80), seed=9)
    viewer = make_napari_viewer()
    segment, curate = dock(viewer, "Segment"), dock(viewer, "Curate")
    curate.curated_dir.value, curate.source_dir.value = tmp_path / "curated", source
    curate.next_button.native.click()
    qtbot.waitUntil(lambda: curate.worker is None and len(viewer.layers) == 2, timeout=60_000)
    default_area = viewer.layers[-1].data.sum()
    segment.post.threshold.value = 0.95
    assert "threshold 0.95" in curate.post_line.value
    curate.ask_unsaved = lambda message: DISCARD
    viewer.layers.clear()
    curate._opened, curate.visited, curate.position = None, [], -1
    curate.next_button.native.click()
    qtbot.waitUntil(lambda: curate.worker is None and len(viewer.layers) == 2, timeout=60_000)
    assert viewer.layers[-1].data.sum() < default_area and errors == []


def test_retrain_on_curated_shows_both_models_on_the_same_pairs(make_napari_viewer, qtbot, tmp_path,
                                                               tiny_model_path, errors):
    SESSION.model.use(tiny_model_path)
    curated = tmp_path / "curated"
    write_synthetic_dataset(curated, 4, (80, 80), seed=11)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = curated
    assert widget.update_count() == 4
    retraining = widget.retraining
    retraining.start_from.value, retraining.epochs.value = "model in use", 1
    retraining.retrain_button.native.click()
    qtbot.waitUntil(lambda: retraining.controller.summary is not None and not retraining.controller.running,
                    timeout=SLOW)
    assert errors == []
    summary = retraining.controller.summary
    assert summary.baseline_name == "tiny.pt" and summary.val_dice is not None
    assert f"vs tiny.pt: {summary.baseline_dice:.3f} on the same 1 validation pair" in \
        retraining.controller.result_line.value
    model = load_model(summary.model_path)
    assert model.metadata.started_from == str(tiny_model_path)
    assert model.metadata.config.learning_rate == retrain_on_curated.FINE_TUNE_LR
    adopted = summary.val_dice >= summary.baseline_dice
    assert (SESSION.model.path == Path(summary.model_path)) == adopted


def test_retrain_says_which_curated_pairs_it_left_out(make_napari_viewer, qtbot, tmp_path, tiny_model_path,
                                                     errors, monkeypatch):
    from napari_skinseg._widgets import training_controller
    from napari_skinseg.image_io import write_mask

    warnings = []
    monkeypatch.setattr(training_controller, "show_warning", warnings.append)
    SESSION.model.use(tiny_model_path)
    _, masks = write_synthetic_dataset(tmp_path / "curated", 4, (80, 80), seed=11)
    edited = sorted(masks.iterdir())[0]
    write_mask(edited, np.ones((10, 12), bool), overwrite=True)  # a mask file edited by hand
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    retraining = widget.retraining
    widget.curated_dir.value, retraining.epochs.value = tmp_path / "curated", 1
    retraining.retrain_button.native.click()
    qtbot.waitUntil(lambda: retraining.controller.summary is not None and not retraining.controller.running,
                    timeout=SLOW)
    skipped = retraining.controller.summary.skipped
    assert errors == [] and len(skipped) == 1 and skipped[0].endswith(f"{edited.name}: mask is 12x10 "
                                                                      "but its image is 80x80")
    assert "1 pair left out" in retraining.controller.result_line.value
    assert len(warnings) == 1 and edited.name in warnings[0] and "12x10" in warnings[0]


def test_a_dead_worker_never_takes_napari_down(make_napari_viewer, qtbot, tmp_path, errors):
    viewer, widget = start_long_training(make_napari_viewer, qtbot, tmp_path / "killed.pt")
    layers_before = [layer.name for layer in viewer.layers]
    SESSION.client.kill()  # as the system's out-of-memory killer would
    qtbot.waitUntil(lambda: not widget.controller.running, timeout=60_000)
    assert "model worker was killed" in errors[-1] and "next action starts a new worker" in errors[-1]
    assert "training failed" in widget.status.value
    assert [layer.name for layer in viewer.layers] == layers_before
    # The next action starts a fresh worker and works.
    segment = dock(viewer, "Segment")
    segment.images.value = ["lesion0"]
    segment.segment_button.native.click()
    qtbot.waitUntil(lambda: "lesion0 prediction" in viewer.layers and segment.worker is None, timeout=SLOW)
    assert len(errors) == 1


def test_a_training_never_holds_up_the_other_docks(make_napari_viewer, qtbot, tmp_path, errors):
    # Each running job held a place of napari's thread pool (as many as CPU cores) while it
    # only waited for the worker: on a 2-core machine a training and a folder run took both,
    # and a click, a ranking or an image to segment waited behind them without a word.
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    places = pool.maxThreadCount()
    pool.setMaxThreadCount(1)  # a one-core machine: the training alone filled the pool
    try:
        viewer, train = start_long_training(make_napari_viewer, qtbot, tmp_path / "long.pt")
        segment = dock(viewer, "Segment")
        segment.images.value = ["lesion0"]
        segment.segment_button.native.click()
        qtbot.waitUntil(lambda: "lesion0 prediction" in viewer.layers, timeout=60_000)
        assert train.controller.running  # segmented while the training goes on
        train.start_button.native.click()
        qtbot.waitUntil(lambda: not train.controller.running, timeout=60_000)
        assert pool.maxThreadCount() == 1 and errors == []  # each job gave its place back
    finally:
        pool.setMaxThreadCount(places)


def test_closing_napari_while_a_dock_trains_stops_the_training(make_napari_viewer, qtbot,
                                                               tmp_path, errors):
    # napari's window, closing, aborts the thread workers registered with it: the dock's
    # runner stopped listening, but the training went on in the model worker, unseen, to its
    # last epoch; and items already on their way reached the deleted dock (a RuntimeError in
    # a Qt slot: a traceback per item, and in a plain script an abort of the process).
    viewer, train = start_long_training(make_napari_viewer, qtbot, tmp_path / "closed.pt")
    runner = train.controller.runner
    viewer.close()
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    assert runner.cancel_requested  # stopped in the worker too, within a batch
    qtbot.waitUntil(lambda: runner.job.ended.is_set(), timeout=60_000)
    assert load_model(tmp_path / "closed.pt").metadata.status == "cancelled" and errors == []


def test_jobs_can_run_synchronously(monkeypatch, tmp_path):
    monkeypatch.setattr(jobs, "RUN_SYNCHRONOUSLY", True)
    got = []
    runner = jobs.run_job("devices", returned=got.append)
    assert not runner.running and got and got[0][:2] == ("auto", "cpu")


def test_chosen_path_treats_empty_as_nothing(tmp_path):
    from magicgui.widgets import FileEdit

    field = FileEdit(mode="d")
    assert fields.chosen_path(field) is None
    field.value = tmp_path
    assert fields.chosen_path(field) == tmp_path
    write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    field.value = tmp_path / "x.png"
    with pytest.raises(ValueError, match="is a file"):
        fields.required_folder(field, "input folder")


def test_click_to_fix_changes_the_mask_near_the_click_only(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    image, truth = make_synthetic_lesion((160, 160), seed=61)
    viewer.add_image(image, name="skin", rgb=True)
    segment, curate = dock(viewer, "Segment"), dock(viewer, "Curate")
    segment.images.value = ["skin"]
    segment.segment_button.native.click()
    qtbot.waitUntil(lambda: "skin prediction" in viewer.layers and segment.worker is None, timeout=60_000)
    labels = viewer.layers["skin prediction"]
    ys, xs = np.nonzero(truth)
    cy, cx = int(ys.mean()), int(xs.mean())
    damaged = labels.data.copy()
    damaged[cy - 12:cy + 12, cx - 12:cx + 12] = 0  # a hole the person wants filled
    labels.data = damaged
    curate.click_fix.start_button.native.click()
    points = viewer.layers["skin prediction clicks"]
    assert viewer.layers.selection.active is points and points.mode == "add"
    points.add([cy, cx])  # a "lesion here" click, as the mouse would add it
    click_fix = curate.click_fix
    # the click goes to the worker's click-to-fix network; the mask changes when it answers
    qtbot.waitUntil(lambda: not click_fix._running and not click_fix._pending, timeout=60_000)
    fixed = labels.data.copy()
    # The line says whether the mask now differs from the network's (the fill may restore it).
    from napari_skinseg._widgets.layers import edited_by_hand

    assert curate.target.value.endswith("(unsaved corrections)") == edited_by_hand(labels)
    assert fixed[cy, cx] == 1 and fixed[cy - 12:cy + 12, cx - 12:cx + 12].mean() > 0.9
    far = np.ones_like(fixed, bool)
    far[max(0, cy - 60):cy + 60, max(0, cx - 60):cx + 60] = False
    assert np.array_equal(fixed[far], damaged[far])  # nothing changes far from the click
    curate.click_fix.kind.value = curate.click_fix.kind.choices[1]  # "skin" clicks
    corner = (5, 5) if not truth[5, 5] else (150, 150)
    points.add(list(corner))
    qtbot.waitUntil(lambda: not click_fix._running and not click_fix._pending, timeout=60_000)
    assert [tuple(c[:3]) for c in points.face_color] == [(1, 0, 1), (0, 1, 1)]  # lesion, skin
    curate.click_fix.undo_button.native.click()
    assert np.array_equal(labels.data, fixed) and len(points.data) == 1
    curate.click_fix.undo_button.native.click()
    assert np.array_equal(labels.data, damaged) and len(points.data) == 0
    assert "saving: 'skin prediction' as skin (unsaved corrections)" == curate.target.value
    # A box around the damaged part: the network re-segments inside it, nothing changes outside.
    curate.click_fix.box_button.native.click()
    shapes = viewer.layers["skin prediction box"]
    assert shapes.mode == "add_rectangle"
    shapes.add_rectangles(np.array([[cy - 30, cx - 30], [cy + 30, cx + 30]]))
    curate.click_fix.box_button.native.click()
    qtbot.waitUntil(lambda: labels.data[cy, cx] == 1, timeout=60_000)
    outside = np.ones_like(fixed, bool)
    outside[cy - 30:cy + 30, cx - 30:cx + 30] = False
    assert np.array_equal(labels.data[outside], damaged[outside])
    assert errors == []


def test_worst_first_review_queue_and_accepting_the_rest(make_napari_viewer, qtbot, tmp_path, errors):
    source, _ = write_synthetic_dataset(tmp_path / "todo", 4, (96, 96), seed=13)
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    write_image(source / "zz_noise.png", noise)  # no lesion to find: the model is least sure here
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    widget.queue.order.value = "worst first (predicted Dice)"
    qtbot.waitUntil(lambda: widget.worker is None and len(widget.queue.predicted) == 5, timeout=SLOW)
    ranked = sorted(widget.queue.predicted, key=widget.queue.predicted.get)
    widget.next_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and len(viewer.layers) == 2, timeout=60_000)
    assert viewer.layers[0].name == ranked[0].stem  # the worst first
    assert "predicted Dice" in widget.status.value
    assert f"predicted Dice {widget.queue.predicted[ranked[0]]:.2f}" in widget.target.value
    widget.queue.accept_above.value = 0.5
    segmenting = widget.runner = SimpleNamespace(running=True)  # this image's job not done yet
    widget.queue.accept_button.native.click()
    assert widget.runner is segmenting and "accept" not in widget.status.value  # waits its turn
    widget.runner = None
    widget.queue.accept_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and "accepted" in widget.status.value, timeout=SLOW)
    expected = [p for p in ranked[1:] if widget.queue.predicted[p] >= 0.5]
    assert widget.update_count() == len(expected)
    assert f"accepted {len(expected)} image(s)" in widget.status.value
    assert not (tmp_path / "curated" / "masks" / f"{ranked[0].stem}_segmentation.png").exists()
    # accepted unseen: retraining trains on them and never validates on them; the dock says so
    assert widget.folder.unreviewed_ids() == {p.stem for p in expected}
    assert f"({len(expected)} accepted unseen" in widget.count.value
    widget.save_training_mask()  # the image the person looked at counts as reviewed
    assert widget.folder.unreviewed_ids() == {p.stem for p in expected}
    assert widget.update_count() == len(expected) + 1 and errors == []


def _a_mask_to_fix(make_napari_viewer, shape=(120, 120), seed=62, hole=False):
    """A viewer with a synthetic lesion image and its mask (with a 16-pixel hole at the lesion's
    centre when ``hole``) selected, and the Curate dock: what the click-to-fix tests start from.
    Returns the viewer, true mask, mask shown, Labels layer, dock and the hole's centre."""
    viewer = make_napari_viewer()
    image, truth = make_synthetic_lesion(shape, seed=seed)
    viewer.add_image(image, name="skin", rgb=True)
    shown = truth.copy()
    ys, xs = np.nonzero(truth)
    cy, cx = int(ys.mean()), int(xs.mean())
    if hole:
        shown[cy - 8:cy + 8, cx - 8:cx + 8] = False
    labels = viewer.add_labels(shown.astype(np.uint8), name="skin mask")
    curate = dock(viewer, "Curate")
    viewer.layers.selection.active = labels
    return viewer, truth, shown, labels, curate, (cy, cx)


def test_a_click_the_worker_cannot_answer_is_fixed_in_napari(make_napari_viewer, qtbot, monkeypatch):
    from napari_skinseg._widgets import click_fix

    viewer, _, damaged, labels, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    sent = []

    def worker_fails(name, kwargs, failed=None, **_):
        sent.append((name, kwargs))
        failed("the model worker was killed")  # as a dead worker reports it
    monkeypatch.setattr(click_fix, "run_job", worker_fails)
    curate.click_fix.start_button.native.click()
    viewer.layers["skin mask clicks"].add([cy, cx])
    # pressing "Fix with clicks" asked the worker to load its click network before any click
    assert [name for name, _ in sent] == ["prepare_clicks", "click_refine"]
    assert sent[0][1]["image"].shape == viewer.layers["skin"].data.shape and sent[1][1]["clicks"] == [(cy, cx, True)]
    assert labels.data[cy, cx] == 1  # the random walker filled the hole instead
    assert not curate.click_fix._running and not curate.click_fix._pending
    curate.click_fix.undo_button.native.click()
    assert np.array_equal(labels.data > 0, damaged)


def test_clicks_and_a_box_can_be_cancelled_when_the_worker_hangs(make_napari_viewer, qtbot,
                                                                    errors):
    # Clicks and a box sent to a worker that stops without dying waited for ever: the click-fix
    # controls stayed busy ("a click is still being fixed") and nothing let the person out.
    viewer, _, damaged, labels, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    panel = curate.click_fix
    history = len(labels._undo_history)
    with a_stopped_worker(qtbot) as process:
        panel.start_button.native.click()  # its loading of the click network hangs too
        points = viewer.layers["skin mask clicks"]
        panel.box_button.native.click()
        viewer.layers["skin mask box"].add_rectangles(np.array([[cy - 20, cx - 20],
                                                                [cy + 20, cx + 20]]))
        panel.box_button.native.click()
        assert shown(panel.cancel_button) and panel.cancel_button.text == "Cancel box"
        points.add([cy, cx])
        points.add([cy + 3, cx + 3])  # waits its turn
        assert panel.cancel_button.text == "Cancel 2 clicks and box"
        panel.undo_button.native.click()  # refused while the clicks wait; the message says why
        assert errors == ["a click is still being fixed: undo once its mask is shown, or press "
                          "\"Cancel 2 clicks and box\""]
        panel.cancel_button.native.click()
        assert len(points.data) == 0 and not shown(panel.cancel_button)  # taken back at once
        assert curate.status.value.startswith("2 clicks and box cancelled: the mask is as it was")
        qtbot.waitUntil(lambda: not panel.busy, timeout=30_000)
        assert process.poll() is not None  # the stopped worker was ended
    # nothing half-applied: the mask, its undo history and the clicks are as before
    assert np.array_equal(labels.data > 0, damaged) and len(labels._undo_history) == history
    [(_, session, _)] = panel.sessions.values()
    assert session.clicks == [] and not session.can_undo
    assert len(viewer.layers["skin mask box"].data) == 1  # the box stays, to be pressed again
    points.add([cy, cx])  # works again, with a new worker
    qtbot.waitUntil(lambda: not panel.busy, timeout=SLOW)
    assert SESSION.client.pid != process.pid and labels.data[cy, cx] == 1
    assert len(points.data) == 1 and not shown(panel.cancel_button)
    panel.undo_button.native.click()
    assert np.array_equal(labels.data > 0, damaged) and len(points.data) == 0
    assert len(errors) == 1  # the refused undo only: a cancel shows no error


def test_a_cancelled_click_answered_late_changes_nothing(make_napari_viewer, monkeypatch, errors):
    viewer, _, damaged, labels, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    started = []

    def held_job(name, kwargs, **callbacks):  # a job whose answer the test gives, when it likes
        runner = SimpleNamespace(name=name, kwargs=kwargs, running=True, cancel_requested=False,
                                  **callbacks)
        runner.cancel = lambda: setattr(runner, "cancel_requested", True)
        started.append(runner)
        return runner
    monkeypatch.setattr(click_fix, "run_job", held_job)
    panel = curate.click_fix
    panel.start_button.native.click()
    points = viewer.layers["skin mask clicks"]
    points.add([cy, cx])
    panel.cancel_button.native.click()
    assert [(r.name, r.cancel_requested) for r in started] == [("prepare_clicks", True),
                                                                ("click_refine", True)]
    points.add([cy + 2, cx + 2])  # a new click while the cancelled one ends: it waits its turn
    assert panel.cancel_button.text == "Cancel click" and len(started) == 2
    started[1].returned(np.ones_like(damaged))  # the worker answers after all: nothing applied
    assert np.array_equal(labels.data > 0, damaged) and len(labels._undo_history) == 0
    assert started[2].name == "click_refine"
    assert started[2].kwargs["clicks"] == [(cy + 2, cx + 2, True)]
    started[2].returned(np.ones_like(damaged))  # the new click's answer is applied
    assert labels.data[cy, cx] == 1 and len(points.data) == 1
    panel.undo_button.native.click()
    assert np.array_equal(labels.data > 0, damaged) and len(points.data) == 0 and errors == []


def test_a_click_after_its_labels_layer_was_closed_is_a_message(make_napari_viewer, monkeypatch):
    from napari_skinseg._widgets import click_fix

    viewer, _, _, _, curate, _ = _a_mask_to_fix(make_napari_viewer, (64, 64), seed=63)
    monkeypatch.setattr(click_fix, "run_job", lambda *args, **kwargs: None)
    curate.click_fix.start_button.native.click()
    viewer.layers.remove("skin mask")  # the person closes the mask; its clicks layer stays
    viewer.layers["skin mask clicks"].add([30, 30])  # no KeyError traceback in napari
    assert "no longer fixes a Labels layer" in curate.status.value


def test_fix_with_clicks_on_labels_of_another_size_names_the_layers(make_napari_viewer, monkeypatch):
    from napari_skinseg._widgets import click_fix

    errors = []
    monkeypatch.setattr(click_fix, "show_error", errors.append)
    viewer = make_napari_viewer()
    image, truth = make_synthetic_lesion((64, 80), seed=63)
    viewer.add_image(image, name="skin", rgb=True)
    viewer.add_labels(truth[:32].astype(np.uint8), name="skin mask")  # e.g. a mask of a crop
    curate = dock(viewer, "Curate")
    curate.click_fix.start_button.native.click()
    assert errors[-1] == "labels 'skin mask' are 80x32 but its image 'skin' is 80x64: click-to-fix " \
                         "needs a mask of the image's size"
    assert curate.status.value == errors[-1] and "skin mask clicks" not in viewer.layers


def test_prediction_and_probability_layers_sit_on_a_scaled_image(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    image, _ = make_synthetic_lesion((64, 80), seed=64)
    viewer.add_image(image, name="skin", rgb=True, scale=(0.5, 0.5), translate=(10, 20))
    widget = dock(viewer, "Segment")
    widget.images.value, widget.probabilities.value = ["skin"], True
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: "skin prediction" in viewer.layers and widget.worker is None, timeout=60_000)
    for name in ("skin prediction", "skin probability"):  # both over the image, not beside it
        assert tuple(viewer.layers[name].scale) == (0.5, 0.5), name
        assert tuple(viewer.layers[name].translate) == (10, 20), name
    assert errors == []


def test_predictions_and_clicks_sit_on_a_rotated_or_sheared_image(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    image, _ = make_synthetic_lesion((64, 80), seed=64)
    skin = viewer.add_image(image, name="skin", rgb=True, scale=(0.5, 0.5), translate=(10, 20),
                            rotate=30, shear=[0.2], affine=[[1, 0, 5], [0, 2, 0], [0, 0, 1]])
    widget = dock(viewer, "Segment")
    widget.images.value, widget.probabilities.value = ["skin"], True
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: "skin prediction" in viewer.layers and widget.worker is None, timeout=60_000)
    corner = (63, 79)  # pixel (63, 79) of every layer lands on the image's pixel (63, 79)
    for name in ("skin prediction", "skin probability"):
        assert np.allclose(viewer.layers[name].data_to_world(corner), skin.data_to_world(corner)), name
    viewer.layers.selection.active = viewer.layers["skin prediction"]
    curate = dock(viewer, "Curate")
    points = curate.click_fix.start()  # a click lands on the pixel under the mouse
    assert np.allclose(points.data_to_world(corner), skin.data_to_world(corner))
    assert errors == []


def test_next_in_worst_first_order_opens_an_image_once_ranked(make_napari_viewer, qtbot, tmp_path, errors):
    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=14)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    with qtbot.waitSignal(widget.queue.order.changed):  # worst first chosen before any folder: no ranking
        widget.queue.order.value = "worst first (predicted Dice)"
    widget.source_dir.value = source
    widget.next_button.native.click()  # ranks first, then opens the worst image: one click
    qtbot.waitUntil(lambda: widget.worker is None and len(widget.queue.predicted) == 2
                    and len(viewer.layers) == 2, timeout=SLOW)
    assert viewer.layers[0].name == min(widget.queue.predicted, key=widget.queue.predicted.get).stem
    assert SESSION.model.first_use_note() == "" and errors == []  # loaded: no more notes


def test_next_pressed_while_the_folder_is_ranked_opens_the_worst_image_after(
        make_napari_viewer, qtbot, tmp_path, errors, monkeypatch):
    # Next during the ranking said "still segmenting the previous image" and nothing opened.
    warnings = []
    monkeypatch.setattr(curate_widget, "show_warning", warnings.append)
    source, _ = write_synthetic_dataset(tmp_path / "todo", 3, (64, 64), seed=15)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    widget.queue.order.value = "worst first (predicted Dice)"  # starts ranking the folder
    assert widget.worker is not None
    widget.next_button.native.click()  # pressed while it ranks
    qtbot.waitUntil(lambda: widget.worker is None and len(widget.queue.predicted) == 3
                    and len(viewer.layers) == 2, timeout=60_000)
    assert viewer.layers[0].name == min(widget.queue.predicted, key=widget.queue.predicted.get).stem
    assert warnings == [] and errors == []


def test_curate_offers_no_results_folder_extras_as_images(make_napari_viewer, tmp_path):
    # A folder segmented before holds <id>_overlay.png and <id>_probability.png: they were
    # offered as images to curate (and ranked) beside the photographs.
    source = tmp_path / "todo"
    source.mkdir()
    image = make_synthetic_lesion((64, 64), seed=90)[0]
    for name in ("a.png", "a_overlay.png", "a_probability.png"):
        write_image(source / name, image)
    write_image(source / "a_segmentation.png", np.zeros((64, 64), np.uint8))
    widget = dock(make_napari_viewer(), "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    assert [p.name for p in widget._todo()] == ["a.png"]


def test_curate_never_files_two_images_under_one_curated_pair(make_napari_viewer, qtbot, tmp_path,
                                                              errors, monkeypatch):
    warnings = []
    monkeypatch.setattr(curate_widget, "show_warning", warnings.append)
    source = tmp_path / "todo"
    source.mkdir()
    for i, name in enumerate(("a.jpg", "a.png", "c d.png")):  # a.png would be saved as "a" too
        write_image(source / name, make_synthetic_lesion((64, 64), seed=80 + i)[0])
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    widget.ask_unsaved = lambda message: DISCARD

    def next_opens(stem):
        widget.next_button.native.click()
        qtbot.waitUntil(lambda: widget.worker is None and f"{stem} prediction" in viewer.layers,
                        timeout=60_000)

    next_opens("a")
    next_opens("c d")  # a.png is skipped, with a warning that names a.jpg
    assert any("a.png" in w and "a.jpg" in w for w in warnings)
    widget.save_button.native.click()  # saved as the file-name-safe id "c_d" ...
    next_opens("a")
    widget.save_button.native.click()
    widget.next_button.native.click()  # ... so "c d.png" counts as curated: nothing left
    assert widget.status.value == "every image of that folder has a curated mask"
    assert sorted(p.name for p in (tmp_path / "curated" / "masks").iterdir()) == \
        ["a_segmentation.png", "c_d_segmentation.png"]
    assert errors == []


def test_an_image_closed_or_renamed_while_segmented(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    for name, seed in (("gone", 65), ("renamed", 66)):
        viewer.add_image(make_synthetic_lesion((64, 64), seed=seed)[0], name=name, rgb=True)
    widget = dock(viewer, "Segment")
    widget.images.value = ["gone", "renamed"]
    widget.segment_button.native.click()
    viewer.layers.remove("gone")  # before the worker answers
    viewer.layers["renamed"].name = "skin"
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    # no prediction of a closed image; the renamed one's prediction goes by its new name
    assert [layer.name for layer in viewer.layers] == ["skin", "skin prediction"]
    assert "not shown (closed meanwhile): gone" in widget.status.value and errors == []


def test_clicks_and_undo_keep_what_was_painted_between_clicks(make_napari_viewer, monkeypatch):
    from napari_skinseg._widgets import click_fix

    viewer, truth, damaged, labels, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    assert not truth[:12, :12].any()
    monkeypatch.setattr(click_fix, "run_job", lambda name, kwargs, failed=None, **_:
                        failed("no worker") if failed else None)  # clicks fixed in napari
    curate.click_fix.start_button.native.click()
    points = viewer.layers["skin mask clicks"]
    points.add([cy, cx])
    assert labels.data[cy, cx] == 1
    labels.brush_size = 5
    labels.paint((6, 6), 1)  # a brush stroke between two clicks, far from both
    points.add([cy + 2, cx + 2])
    assert labels.data[6, 6] == 1  # the next click keeps it
    curate.click_fix.undo_button.native.click()
    curate.click_fix.undo_button.native.click()
    assert labels.data[6, 6] == 1  # undoing the clicks undoes only what they changed
    assert np.array_equal(labels.data[20:] > 0, damaged[20:])


def test_undo_acts_on_the_clicks_layer_selected_among_two(make_napari_viewer, monkeypatch):
    """napari hands the plugin a new proxy of a layer on every access, so the dock never knew
    which clicks layer was selected: with two images being fixed, Undo took back a click on the
    last one started, whichever was selected."""
    from napari_skinseg._widgets import click_fix

    viewer, _, damaged, labels, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    image, truth = make_synthetic_lesion((100, 100), seed=63)
    viewer.add_image(image, name="other", rgb=True)
    other = viewer.add_labels(truth.astype(np.uint8), name="other mask")
    monkeypatch.setattr(click_fix, "run_job", lambda name, kwargs, failed=None, **_:
                        failed("no worker") if failed else None)  # clicks fixed in napari
    panel = curate.click_fix
    viewer.layers.selection.active = labels
    panel.start_button.native.click()
    viewer.layers["skin mask clicks"].add([cy, cx])  # fills the hole of the first mask
    assert labels.data[cy, cx] == 1
    viewer.layers.selection.active = other
    panel.start_button.native.click()  # a second session, started last
    viewer.layers.selection.active = viewer.layers["skin mask clicks"]
    panel.undo_button.native.click()
    assert np.array_equal(labels.data > 0, damaged)  # the selected layer's click was undone
    assert np.array_equal(other.data > 0, truth)


def test_segment_asks_before_replacing_a_labels_layer_it_did_not_make(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    image, truth = make_synthetic_lesion((64, 64), seed=67)
    viewer.add_image(image, name="skin", rgb=True)
    # e.g. a mask drawn earlier and opened from a file under this name: nothing says how it was made
    own = viewer.add_labels(truth.astype(np.uint8) * 2, name="skin prediction")
    drawn = own.data.copy()
    widget = dock(viewer, "Segment")
    asked = []
    widget.confirm_replace = lambda message: asked.append(message) or False
    widget.images.value = ["skin"]
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert len(asked) == 1 and np.array_equal(own.data, drawn) and "kept" in widget.status.value
    assert errors == []


def test_curate_never_takes_over_a_layer_that_has_its_names(make_napari_viewer, qtbot, tmp_path, errors):
    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=15)
    first = sorted(source.iterdir())[0].stem
    viewer = make_napari_viewer()
    # the person's own corrected mask, named like the prediction Curate makes for `first`
    own = viewer.add_labels(np.ones((64, 64), np.uint8), name=f"{first} prediction")
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    widget.ask_unsaved = lambda message: DISCARD
    widget.next_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and len(viewer.layers) == 3, timeout=60_000)
    assert own in viewer.layers and (own.data == 1).all()
    assert viewer.layers.selection.active is not own  # the new prediction is worked on
    widget.next_button.native.click()  # closes what Curate opened, and only that
    qtbot.waitUntil(lambda: widget.worker is None and widget.position == 1 and len(viewer.layers) == 3,
                    timeout=60_000)
    assert own in viewer.layers and (own.data == 1).all() and errors == []


def test_retrain_pressed_twice_starts_one_training(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_skinseg._widgets.training_controller import TrainingController

    write_synthetic_dataset(tmp_path / "curated", 2, (64, 64), seed=16)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    widget.retraining.start_from.value = "bundled model"  # its settings are read from the worker first
    started = []
    monkeypatch.setattr(TrainingController, "start",
                        lambda self, *args, **kwargs: started.append(args))
    widget.retraining.retrain_button.native.click()
    widget.retraining.retrain_button.native.click()  # while the first is still being prepared
    qtbot.waitUntil(lambda: not jobs.RUNNING, timeout=60_000)
    assert len(started) == 1  # two runs would write the same retrained-<time>.pt


def test_a_deleted_or_moved_click_point_comes_back_and_later_clicks_still_count(make_napari_viewer, monkeypatch):
    from napari_skinseg._widgets import click_fix

    viewer, truth, _, labels, curate, _ = _a_mask_to_fix(make_napari_viewer)
    monkeypatch.setattr(click_fix, "run_job", lambda name, kwargs, failed=None, **_:
                        failed("no worker") if failed else None)  # clicks fixed in napari
    points = curate.click_fix.start()
    points.add([5, 5])
    points.add([110, 110])
    points.selected_data = {0}
    points.remove_selected()  # napari's delete key: the click would stay in force, unseen
    assert len(points.data) == 2 and "Undo click" in curate.status.value
    assert not truth[60, 5]
    points.add([60, 5])  # the next click is a click, not taken for a deletion
    assert len(points.data) == 3 and "click at (60, 5)" in curate.status.value
    placed = np.array(points.data)
    points.data[2] = [70.0, 30.0]  # a drag, as napari's select mode does it: in place, ...
    points.events.data(value=points.data, action="changed", data_indices=(2,),
                       vertex_indices=((),))  # ... then the event
    assert np.array_equal(points.data, placed) and "cannot be moved" in curate.status.value


def click_on(layer, yx, button=1, modifiers=()):
    """A mouse click on the canvas over world position ``yx``, as napari delivers it to the
    active layer (press, then release, each wrapped read-only), the way napari's own tests of
    the Points mouse bindings do it."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    for kind, deliver in (("mouse_press", mouse_press_callbacks),
                          ("mouse_release", mouse_release_callbacks)):
        event = SimpleNamespace(type=kind, button=button, modifiers=list(modifiers),
                                position=tuple(float(v) for v in yx), pos=np.zeros(2),
                                is_dragging=False, handled=False, dims_displayed=[0, 1],
                                view_direction=None, up_direction=None)
        deliver(layer, ReadOnlyWrapper(event, exceptions=("handled",)))


def kinds(session) -> list[tuple[int, int, bool]]:
    return [(c.y, c.x, c.lesion) for c in session.clicks]


def test_a_right_or_shift_click_marks_skin_without_leaving_the_canvas(make_napari_viewer, qtbot,
                                                                      errors):
    # The kind of a click was only the dock's combo: a mask too big here and too small there
    # meant going back to the dock between clicks.
    viewer, truth, _, labels, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    assert not truth[:40, :40].any()
    shown_mask = labels.data.copy()
    shown_mask[10:30, 10:30] = 1  # skin taken for lesion, far from the lesion
    labels.data = shown_mask
    panel = curate.click_fix
    panel.start_button.native.click()
    points = viewer.layers["skin mask clicks"]
    assert panel.kind.value == click_fix.LESION
    assert points.help.startswith("left click: lesion, right or Shift+click: skin (T swaps them); ")
    assert viewer.help == points.help and "right or Shift+click" in curate.status.value
    _, session, _ = next(iter(panel.sessions.values()))

    def settled():
        qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)

    click_on(points, (20, 20), button=2)  # right click on the wrongly taken skin
    assert len(points.data) == 1 and tuple(points.face_color[0][:3]) == (0, 1, 1)  # cyan at once
    settled()
    assert kinds(session) == [(20, 20, False)] and labels.data[20, 20] == 0
    assert labels.data[10:30, 10:30].mean() < 0.2  # the skin around it is no longer lesion
    assert "skin click at (20, 20)" in curate.status.value
    click_on(points, (cy, cx))  # a left click in the hole: lesion, the combo's kind
    settled()
    assert kinds(session)[-1] == (cy, cx, True) and labels.data[cy, cx] == 1
    panel.kind.value = click_fix.SKIN  # left clicks mark skin now: right and Shift ones lesion
    click_on(points, (cy + 20, cx), modifiers=["Shift"])
    click_on(points, (cy - 20, cx), button=2)
    settled()
    assert [c.lesion for c in session.clicks] == [False, True, True, True]
    assert [tuple(c[:3]) for c in points.face_color] == [(0, 1, 1), (1, 0, 1), (1, 0, 1), (1, 0, 1)]
    assert panel.kind.value == click_fix.SKIN  # the combo stays as it was
    panel.undo_button.native.click()  # undo, as before, takes back the last click
    assert len(points.data) == 3 and len(session.clicks) == 3
    points.mode = "select"  # no clicks outside add mode, whatever the button
    assert "Shift+click" not in points.help
    click_on(points, (60, 5), button=2)
    points.mode = "add"  # napari re-appends its own add callback: the panel's stays after it
    assert points.mouse_drag_callbacks[-1] == panel._mark_press
    assert "right or Shift+click: lesion" in points.help and "select points" in viewer.help
    click_on(points, (60, 5))
    settled()
    assert kinds(session)[-1] == (60, 5, False) and len(points.data) == 4 and errors == []


def test_a_right_click_is_a_click_also_where_napari_adds_on_left_clicks_only(make_napari_viewer,
                                                                            monkeypatch):
    viewer, _, _, _, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    monkeypatch.setattr(click_fix, "run_job", lambda name, kwargs, failed=None, **_:
                        failed("no worker") if failed else None)  # clicks fixed in napari
    panel = curate.click_fix
    panel.start_button.native.click()
    points = viewer.layers["skin mask clicks"]
    napari_add = points.mouse_drag_callbacks[0]

    def left_only(layer, event):  # as napari releases that ignore other buttons would do
        if event.button == 1:
            yield from napari_add(layer, event)
    points.mouse_drag_callbacks[0] = left_only
    click_on(points, (5, 5), button=2)
    click_on(points, (cy, cx))
    _, session, _ = next(iter(panel.sessions.values()))
    assert kinds(session) == [(5, 5, False), (cy, cx, True)] and len(points.data) == 2
    points.add([6, 6])  # a point added without the mouse: the combo's kind
    assert kinds(session)[-1] == (6, 6, True)


def test_the_t_key_on_the_clicks_layer_switches_what_a_click_marks(make_napari_viewer):
    from vispy.util.keys import Key

    viewer, _, _, _, curate, _ = _a_mask_to_fix(make_napari_viewer, (64, 64), seed=63)
    panel = curate.click_fix
    panel.start_button.native.click()
    points = viewer.layers["skin mask clicks"]
    assert viewer.layers.selection.active is points
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    canvas.events.key_press(key=Key("T"))
    canvas.events.key_release(key=Key("T"))
    assert panel.kind.value == click_fix.SKIN and points.current_face_color == "cyan"
    assert points.help.startswith("left click: skin, right or Shift+click: lesion")
    assert viewer.help == points.help
    assert curate.status.value.startswith("left click: skin")
    canvas.events.key_press(key=Key("T"))
    canvas.events.key_release(key=Key("T"))
    assert panel.kind.value == click_fix.LESION and points.current_face_color == "magenta"


def test_training_docks_show_which_pairs_were_skipped(qtbot, monkeypatch):
    # Skipped pairs and odd masks were named only in the model worker's log.
    from napari_skinseg._widgets import training_controller
    from napari_skinseg.reports import PairNotes

    shown, statuses = [], []
    monkeypatch.setattr(training_controller, "show_warning", shown.append)
    controller = training_controller.TrainingController(lambda running: None, statuses.append)
    notes = PairNotes(3, [f"p{i}.jpg: mask is 32x32 but its image is 64x64" for i in range(7)],
                      ["p9_segmentation.png: mask holds 2 distinct values, not only 0 and 255"])
    controller._on_event(notes)
    assert len(shown) == 1 and shown[0].startswith("7 of 10 pairs skipped:")
    assert "p0.jpg: mask is 32x32" in shown[0] and "... and 2 more" in shown[0]
    assert "p9_segmentation.png: mask holds 2 distinct values" in shown[0]


def test_a_renamed_prediction_is_asked_about_and_saved_as_its_own_image(make_napari_viewer, qtbot,
                                                                        tmp_path, errors):
    # Curate knew its layers by name: after "synth_0 prediction" was renamed, Next neither asked
    # about its corrections nor closed it, and saving it then filed it under the next image
    # (the only other image of its size).
    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=18)
    first, second = sorted(p.stem for p in source.iterdir())
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    asked = []
    widget.ask_unsaved = lambda message: asked.append(message) or STAY
    widget.next_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and f"{first} prediction" in viewer.layers,
                    timeout=60_000)
    labels = viewer.layers[f"{first} prediction"]
    labels.paint((5, 5), 1)
    corrected = labels.data > 0
    labels.name = "my fix"
    assert widget.target.value.startswith(f"saving: 'my fix' as {first} (unsaved")
    widget.next_button.native.click()
    assert len(asked) == 1 and "'my fix'" in asked[0]  # stayed: nothing closed
    assert [layer.name for layer in viewer.layers] == [first, "my fix"]
    widget.ask_unsaved = lambda message: curate_widget.SAVE
    widget.next_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None and f"{second} prediction" in viewer.layers,
                    timeout=60_000)
    masks = tmp_path / "curated" / "masks"
    assert [p.name for p in masks.iterdir()] == [f"{first}_segmentation.png"]
    assert np.array_equal(read_mask(masks / f"{first}_segmentation.png"), corrected)
    assert [layer.name for layer in viewer.layers] == [second, f"{second} prediction"]
    assert errors == []


def test_a_mask_whose_image_was_closed_is_never_saved_with_another_image(make_napari_viewer,
                                                                         tmp_path, errors):
    # Its image closed, a prediction was paired with the only other image of its size: saving
    # filed the mask of one lesion with the photograph of another.
    from napari_skinseg._widgets.layers import show_prediction
    from napari_skinseg.config import PostprocessConfig

    viewer = make_napari_viewer()
    image, truth = make_synthetic_lesion((64, 64), seed=19)
    viewer.add_image(image, name="a", rgb=True)
    labels = show_prediction(viewer, "a", truth.astype(np.float32), PostprocessConfig())
    labels.name = "a corrected"
    widget = dock(viewer, "Curate")
    widget.curated_dir.value = tmp_path / "curated"
    viewer.add_image(make_synthetic_lesion((64, 64), seed=20)[0], name="b", rgb=True)
    viewer.layers.selection.active = labels
    assert widget.target.value == "saving: 'a corrected' as a"  # renamed: still a's mask
    viewer.layers.remove("a")
    viewer.layers.selection.active = labels
    widget.save_button.native.click()
    assert not (tmp_path / "curated").exists()
    assert errors and "'a corrected' was made for is closed" in errors[-1]
    labels.name = "b mask"  # the person says which image it is: then it is saved with that one
    widget.save_button.native.click()
    assert (tmp_path / "curated" / "masks" / "b_segmentation.png").exists()


def test_curate_never_hides_an_image_whose_name_is_saved_like_another(make_napari_viewer, tmp_path,
                                                                      monkeypatch):
    # "Müller.png" and "Möller.png" are both saved as the curated pair "M_ller": once the first
    # was saved, the second counted as curated and was never offered, without a word.
    warnings = []
    monkeypatch.setattr(curate_widget, "show_warning", warnings.append)
    source = tmp_path / "todo"
    source.mkdir()
    for i, name in enumerate(("Möller.png", "Müller.png", "c d.png", "c_d.png")):
        write_image(source / name, make_synthetic_lesion((64, 64), seed=85 + i)[0])
    widget = dock(make_napari_viewer(), "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    assert [p.name for p in widget._todo()] == ["Möller.png", "c d.png"]
    assert len(warnings) == 2
    assert "Müller.png" in warnings[0] and "Möller.png" in warnings[0] \
        and "M_ller_segmentation.png" in warnings[0]
    assert "c_d.png" in warnings[1] and "c d.png" in warnings[1]


def test_a_save_that_fails_half_way_leaves_no_pair_behind(make_napari_viewer, tmp_path, errors):
    # The image was written, the mask not (a full disk): the image stayed alone, so the next
    # save asked "A curated pair 'first' exists. Replace it?", and "No" said the curated pair
    # "was kept as it was" - there was none.
    viewer = make_napari_viewer()
    _open_two_images(viewer)
    widget = dock(viewer, "Curate")
    curated = tmp_path / "curated"
    widget.curated_dir.value = curated
    asked = []
    widget.confirm_overwrite = lambda message: asked.append(message) or False
    labels = viewer.layers["first mask"]
    labels.data[10:30, 10:30] = 1
    curated.mkdir()
    (curated / "masks").write_text("not a folder")  # the mask cannot be written
    viewer.layers.selection.active = labels
    widget.save_button.native.click()
    assert len(errors) == 1 and "masks" in errors[0]
    assert not (curated / "images" / "first.png").exists()  # no image without its mask
    (curated / "masks").unlink()
    widget.save_button.native.click()
    assert asked == [] and widget.status.value.startswith("saved first")
    assert read_mask(curated / "masks" / "first_segmentation.png").sum() == 400


def test_curate_status_lines_stay_true_while_an_image_is_segmented(make_napari_viewer, qtbot,
                                                                   tmp_path, errors):
    # The image closed before its prediction came: the line said "segmenting ..." for good.
    # Save pressed again while the next image was segmented (Save & next twice): "select the
    # Labels layer you corrected (or its image) first".
    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=21)
    first, second = sorted(source.iterdir())
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    widget.next_button.native.click()
    viewer.layers.remove(first.stem)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value == f"{first.name} was closed while it was segmented"
    assert [layer.name for layer in viewer.layers] == []
    widget.next_button.native.click()
    widget.save_next_button.native.click()  # before its prediction is shown
    assert errors == ["the image is still being segmented: correct and save its prediction "
                      "once it is shown"]
    qtbot.waitUntil(lambda: widget.worker is None and f"{second.stem} prediction" in viewer.layers,
                    timeout=60_000)
    assert not (tmp_path / "curated").exists()


def test_next_while_accepting_says_it_is_accepting(make_napari_viewer, tmp_path, monkeypatch):
    # "still segmenting the previous image; one moment" while the dock was accepting images.
    warnings = []
    monkeypatch.setattr(curate_widget, "show_warning", warnings.append)
    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=22)
    widget = dock(make_napari_viewer(), "Curate")
    widget.curated_dir.value, widget.source_dir.value = tmp_path / "curated", source
    widget.queue.predicted = {path: 0.95 for path in source.iterdir()}  # ranked already
    started = []
    monkeypatch.setattr(curate_widget, "run_job", lambda name, kwargs, **_: started.append(name)
                        or SimpleNamespace(running=True, cancel=lambda: None))
    widget.queue.accept_button.native.click()
    assert started == ["accept_as_curated"] and widget.cancel_button.text == "Cancel accepting"
    widget.next_button.native.click()
    assert started == ["accept_as_curated"]
    assert warnings == ["still accepting images as curated; one moment (or Cancel accepting)"]


def test_back_to_an_image_whose_saved_mask_is_unreadable_changes_nothing(make_napari_viewer,
                                                                         tmp_path, errors):
    # The saved mask was read after the current image was closed: the error came with the
    # image on screen gone and the earlier one open without any mask.
    from napari_skinseg.pairs import PairFolder

    source, _ = write_synthetic_dataset(tmp_path / "todo", 2, (64, 64), seed=23)
    first, second = sorted(source.iterdir())
    curated = PairFolder(tmp_path / "curated")
    curated.write(first.stem, np.zeros((64, 64, 3), np.uint8), np.zeros((10, 12), bool))  # edited
    curated.write(second.stem, np.zeros((64, 64, 3), np.uint8), np.ones((64, 64), bool))
    viewer = make_napari_viewer()
    widget = dock(viewer, "Curate")
    widget.curated_dir.value, widget.source_dir.value = curated.root, source
    widget.visited, widget.position = [first], 0
    assert widget._open(second)  # its saved mask: no worker needed
    widget.visited, widget.position = [first, second], 1
    viewer.layers[f"{second.stem} prediction"].paint((5, 5), 0)  # a correction
    asked = []
    widget.ask_unsaved = lambda message: asked.append(message) or DISCARD
    widget.previous_button.native.click()
    assert errors == [f"{first.stem}_segmentation.png: mask is 12x10 but its image is 64x64"]
    assert [layer.name for layer in viewer.layers] == [second.stem, f"{second.stem} prediction"]
    assert widget.current == second and asked == []


def test_save_or_next_while_a_click_is_being_fixed_waits_for_it(make_napari_viewer, monkeypatch,
                                                                tmp_path, errors):
    # Save (& next) pressed while a click waited for the worker saved the mask without it, and
    # the click's answer was dropped: a correction the person made, lost without a word.
    viewer, truth, damaged, labels, curate, (cy, cx) = _a_mask_to_fix(make_napari_viewer, hole=True)
    curate.curated_dir.value = tmp_path / "curated"
    started = []

    def held_job(name, kwargs, **callbacks):  # a job whose answer the test gives, when it likes
        runner = SimpleNamespace(name=name, running=True, cancel_requested=False, **callbacks)
        started.append(runner)
        return runner
    monkeypatch.setattr(click_fix, "run_job", held_job)
    curate.click_fix.start_button.native.click()
    viewer.layers["skin mask clicks"].add([cy, cx])
    viewer.layers.selection.active = labels
    curate.save_button.native.click()
    assert errors == ["the click is still being fixed: save once the mask is shown, or press "
                      "\"Cancel click\""]
    assert not (tmp_path / "curated").exists()
    started[1].returned(truth)  # the worker answers: the hole is filled
    curate.save_button.native.click()
    saved = read_mask(tmp_path / "curated" / "masks" / "skin_segmentation.png")
    assert saved[cy, cx] and not np.array_equal(saved, damaged) and len(errors) == 1


def test_a_model_chosen_while_training_is_not_replaced_by_the_new_one(make_napari_viewer,
                                                                      tmp_path, monkeypatch):
    # The new model was compared with the model in use when training started; the person then
    # chose another model in Segment, and the finished training replaced their choice anyway.
    from napari_skinseg._widgets import training_controller
    from napari_skinseg.reports import TrainingSummary

    viewer = make_napari_viewer()
    add_pairs(viewer)
    widget = dock(viewer, "Train")
    widget.labels_layers.value = ["lesion0 mask", "lesion1 mask", "lesion2 mask"]
    widget.start_from.value, widget.output.value = "scratch", tmp_path / "new.pt"
    runs = []
    monkeypatch.setattr(training_controller, "run_job", lambda name, kwargs, **callbacks:
                        runs.append(callbacks) or SimpleNamespace(running=True))
    widget.start_button.native.click()
    chosen = tmp_path / "chosen.pt"
    SESSION.model.use(chosen, {"name": "chosen.pt", "val_dice": 0.5})  # picked in Segment
    runs[0]["returned"](TrainingSummary(
        model_path=str(tmp_path / "new.pt"), history=[], best_epoch=2, cancelled=False,
        status="complete", val_names=["lesion1"], val_dice=0.9, baseline_dice=0.8,
        baseline_name=BUNDLED_MODEL_NAME))
    assert SESSION.model.path == chosen
    assert "chosen.pt, put in use while it trained, stays in use" in \
        widget.controller.result_line.value
    assert shown(widget.controller.use_new)
    widget.controller.use_new.native.click()  # the person's call
    assert SESSION.model.path == tmp_path / "new.pt"
