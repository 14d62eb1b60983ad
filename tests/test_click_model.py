"""The click-conditioned network: built from a segmentation model, kept apart from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_skinseg.click_inputs import disk_maps, to_working
from napari_skinseg.click_model import ClickRefiner, make_click_model
from napari_skinseg.errors import ModelFileError
from napari_skinseg.model import load_model
from napari_skinseg.prediction import Segmenter


def test_a_new_click_model_reproduces_its_segmentation_model(tiny_model_path, tiny_samples):
    base = load_model(tiny_model_path)
    click = make_click_model(base)
    assert click.metadata.inputs == "rgb+clicks"
    image = tiny_samples.images[3]
    seg_prob = Segmenter(base, "cpu").predict_probability(image)
    refiner = ClickRefiner(click, "cpu", mirror=False)  # the segmentation model has no mirror
    mask = seg_prob > 0.5
    # the new channels start with zero weights: mask and clicks change nothing yet
    prob = refiner.probability(image, mask, [(10, 10, True), (40, 50, False)])
    np.testing.assert_allclose(prob, seg_prob, atol=1e-5)


def test_click_models_round_trip_and_are_refused_as_segmentation_models(tmp_path, tiny_model_path):
    click = make_click_model(load_model(tiny_model_path))
    path = click.save(tmp_path / "click.pt")
    loaded = load_model(path)
    assert loaded.metadata.inputs == "rgb+clicks"
    first = next(m for m in loaded.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 6
    with pytest.raises(ModelFileError, match="click-to-fix model"):
        Segmenter(loaded, "cpu")
    with pytest.raises(ValueError, match="not a click-to-fix model"):
        ClickRefiner(load_model(tiny_model_path))


def test_click_maps_put_disks_at_the_working_size_positions():
    maps = disk_maps([(10, 20, True), (30, 5, False)], size=64, radius=3)
    assert maps.shape == (2, 64, 64)
    assert maps[0, 10, 20] == 1 and maps[0, 10, 24] == 0 and maps[1, 30, 5] == 1
    assert maps[0].sum() == maps[1].sum() == 29  # a radius-3 disk
    y, x = to_working(255.5, 511.5, (512, 1024), 64)  # the image's centre maps to the centre
    assert abs(y - 31.5) < 1e-9 and abs(x - 31.5) < 1e-9


def test_a_network_click_changes_only_what_reaches_the_click():
    from napari_skinseg.interactive import ClickSession, keep_changes_near

    mask = np.zeros((100, 100), bool)
    mask[20:40, 20:40] = True
    proposal = mask.copy()
    proposal[25:35, 40:50] = True      # grows the lesion next to the click
    proposal[80:90, 80:90] = True      # a far-away change the click did not ask for
    out = keep_changes_near(mask, proposal, (30, 45), reach=10)
    assert out[25:35, 40:50].all() and not out[80:90, 80:90].any()
    assert np.array_equal(out[:, :40], mask[:, :40])
    # through a session: the proposal of a network run elsewhere (napari's worker)
    image = np.full((100, 100, 3), 128, np.uint8)
    s = ClickSession(image, probability=mask.astype(np.float32))
    assert not s.uses_network  # given probabilities: torch-free, no click network
    assert s.clicks_with(30, 45, True) == [(30, 45, True)]
    new = s.apply_proposal(30, 45, True, proposal)
    assert new[30, 45] and not new[85, 85] and len(s.clicks) == 1
    with pytest.raises(ValueError, match="proposal"):
        s.apply_proposal(30, 45, True, proposal[:50])
    assert np.array_equal(s.undo(), mask) and s.clicks == []


def test_a_session_with_a_click_network(tmp_path, tiny_model_path, tiny_samples):
    from napari_skinseg.interactive import ClickSession

    path = make_click_model(load_model(tiny_model_path)).save(tmp_path / "click.pt")
    image = tiny_samples.images[5]
    s = ClickSession(image, model=tiny_model_path, click_model=path, reach=0.2)
    assert s.uses_network
    before = s.mask.copy()
    y, x = np.argwhere(~before)[0] if (~before).any() else (0, 0)
    after = s.click(int(y), int(x), lesion=True)
    assert after[y, x]  # the clicked pixel follows the click
    far = np.ones_like(before)
    r = int(np.ceil(0.2 * max(before.shape)))
    far[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = False
    assert np.array_equal(after[far], before[far])


def test_the_worker_job_answers_a_click(tiny_model_path, tiny_samples, tmp_path):
    from napari_skinseg.generators import drain
    from napari_skinseg.worker_jobs import JOBS

    path = make_click_model(load_model(tiny_model_path)).save(tmp_path / "click.pt")
    image = tiny_samples.images[2]
    mask = np.zeros(image.shape[:2], bool)
    proposal = drain(JOBS["click_refine"](lambda: False, image=image, mask=mask,
                                          clicks=[(30, 30, True)], click_model=str(path)))
    assert proposal.dtype == bool and proposal.shape == mask.shape


def test_preparing_loads_the_click_network_once_for_the_clicks(tiny_model_path, tiny_samples,
                                                               tmp_path):
    from napari_skinseg import worker_jobs
    from napari_skinseg.generators import drain

    path = make_click_model(load_model(tiny_model_path)).save(tmp_path / "click.pt")
    image = tiny_samples.images[2]
    mask = np.zeros(image.shape[:2], bool)
    worker_jobs._CLICK_REFINERS.clear()
    worker_jobs._LAST_CLICK_IMAGE.clear()
    assert drain(worker_jobs.JOBS["prepare_clicks"](lambda: False, image=image, mask=mask,
                                                     click_model=str(path))) is True
    (prepared,) = worker_jobs._CLICK_REFINERS.values()
    assert prepared._cached[0] is image  # the image's network input is ready for the first click
    network_input = prepared._cached[1]
    # each job gets its own copy of the image (unpickled): the same pixels reuse that input
    drain(worker_jobs.JOBS["click_refine"](lambda: False, image=image.copy(), mask=mask,
                                           clicks=[(30, 30, True)], click_model=str(path)))
    assert list(worker_jobs._CLICK_REFINERS.values()) == [prepared]  # not loaded again
    assert prepared._cached[1] is network_input
    other = image[::-1].copy()  # another image is prepared anew
    drain(worker_jobs.JOBS["click_refine"](lambda: False, image=other, mask=mask,
                                           clicks=[(30, 30, True)], click_model=str(path)))
    assert prepared._cached[0] is other and prepared._cached[1] is not network_input


def test_a_lesion_click_never_removes_and_a_skin_click_never_adds():
    from napari_skinseg.interactive import ClickSession

    mask = np.zeros((60, 60), bool)
    mask[10:40, 10:40] = True
    image = np.full((60, 60, 3), 100, np.uint8)
    s = ClickSession(image, probability=mask.astype(np.float32))
    proposal = np.zeros_like(mask)
    proposal[20:45, 20:45] = True  # grows at the click but erases the rest of the lesion
    grown = s.apply_proposal(42, 42, True, proposal)
    assert grown[10:40, 10:40].all() and grown[40:45, 40:45].all()
    proposal = np.ones_like(mask)  # takes the whole image while removing the clicked corner
    proposal[10:20, 10:20] = False
    shrunk = s.apply_proposal(15, 15, False, proposal)
    assert not shrunk[10:20, 10:20].any() and not shrunk[50:, 50:].any()
    assert shrunk[25:35, 25:35].all()


def test_the_refiner_never_answers_for_an_earlier_image(tiny_model_path, tiny_samples):
    refiner = ClickRefiner(make_click_model(load_model(tiny_model_path)))
    mask = np.zeros((64, 64), bool)
    answers = []
    for i in (0, 7):  # two images of one size, each a fresh array (as the worker receives them)
        image = tiny_samples.images[i].copy()
        answers.append(refiner.probability(image, mask, [(5, 5, True)]))
        del image
    fresh = ClickRefiner(make_click_model(load_model(tiny_model_path)))
    np.testing.assert_allclose(answers[1], fresh.probability(tiny_samples.images[7].copy(), mask,
                                                             [(5, 5, True)]), atol=1e-6)


def _click_model_that_uses_clicks(tiny_model_path, tmp_path):
    """A click model whose click channels matter (a fresh one ignores them)."""
    click = make_click_model(load_model(tiny_model_path))
    first = next(m for m in click.network.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        first.weight[:, 3:] = torch.randn_like(first.weight[:, 3:]) * 0.5
    return click.save(tmp_path / "click.pt")


def test_the_onnx_click_engine_answers_as_torch_does(tiny_model_path, tiny_samples, tmp_path):
    pytest.importorskip("onnxruntime")
    from napari_skinseg.engines import make_click_refiner
    from napari_skinseg.onnx_engine import OnnxClickRefiner

    path = _click_model_that_uses_clicks(tiny_model_path, tmp_path)
    image = tiny_samples.images[1]
    mask = np.zeros(image.shape[:2], bool)
    mask[20:50, 15:45] = True
    clicks = [(30, 30, True), (5, 60, False)]
    onnx = make_click_refiner(path, device="cpu", engine="onnx")
    torch_refiner = make_click_refiner(path, device="cpu", engine="torch")
    assert isinstance(onnx, OnnxClickRefiner) and isinstance(torch_refiner, ClickRefiner)
    p_onnx = onnx.probability(image, mask, clicks)
    p_torch = torch_refiner.probability(image, mask, clicks)
    assert p_onnx.shape == mask.shape and p_onnx.dtype == np.float32
    np.testing.assert_allclose(p_onnx, p_torch, atol=2e-4)
    # the clicks are part of the input: moving one changes the answer
    assert not np.allclose(onnx.probability(image, mask, [(60, 5, True)]), p_onnx, atol=1e-3)


def test_each_onnx_engine_refuses_the_other_kind_of_model(tiny_model_path, tmp_path):
    pytest.importorskip("onnxruntime")
    from napari_skinseg.onnx_engine import OnnxClickRefiner, OnnxSegmenter

    path = _click_model_that_uses_clicks(tiny_model_path, tmp_path)
    with pytest.raises(ModelFileError, match="is a click-to-fix model, not a segmentation model"):
        OnnxSegmenter.from_file(path)
    with pytest.raises(ModelFileError, match="is a segmentation model, not a click-to-fix model"):
        OnnxClickRefiner.from_file(tiny_model_path)


def test_two_exports_at_once_in_one_process_both_succeed(tiny_model_path, tmp_path, monkeypatch):
    """The model worker may export the segmentation and the click model in two job threads at
    the same time (Segment, then Fix with clicks); torch's exporter allows one at a time."""
    pytest.importorskip("onnxruntime")
    from concurrent.futures import ThreadPoolExecutor

    from napari_skinseg.onnx_engine import OnnxClickRefiner, OnnxSegmenter

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "fresh-cache"))
    click_path = _click_model_that_uses_clicks(tiny_model_path, tmp_path)
    with ThreadPoolExecutor(2) as pool:
        seg = pool.submit(OnnxSegmenter.from_file, tiny_model_path)
        click = pool.submit(OnnxClickRefiner.from_file, click_path)
        assert seg.result().size == click.result().size
    assert len(list((tmp_path / "fresh-cache").glob("*.onnx"))) == 2


def test_the_click_network_averages_its_answer_with_the_mirror_images(tiny_model_path,
                                                                       tiny_samples, tmp_path):
    from napari_skinseg.engines import make_click_refiner

    path = _click_model_that_uses_clicks(tiny_model_path, tmp_path)
    image = tiny_samples.images[1]
    mask = np.zeros(image.shape[:2], bool)
    mask[20:50, 15:45] = True
    w = image.shape[1]
    clicks = [(30, 30, True), (5, 60, False)]
    mirrored_clicks = [(y, w - 1 - x, lesion) for y, x, lesion in clicks]
    for engine in ("torch", "onnx"):
        if engine == "onnx":
            pytest.importorskip("onnxruntime")
        both = make_click_refiner(path, "cpu", engine)
        plain = make_click_refiner(path, "cpu", engine)
        plain.mirror = False
        expected = (plain.probability(image, mask, clicks)
                    + plain.probability(image[:, ::-1].copy(), mask[:, ::-1].copy(),
                                        mirrored_clicks)[:, ::-1]) / 2
        np.testing.assert_allclose(both.probability(image, mask, clicks), expected, atol=2e-4)
        assert not np.allclose(plain.probability(image, mask, clicks), expected, atol=1e-3)


def test_a_click_during_preparing_does_not_load_the_network_twice(monkeypatch, tmp_path):
    """The worker runs jobs on threads: a click sent while prepare_clicks is still loading waits
    for that network instead of loading a second one."""
    import threading
    import time

    from napari_skinseg import worker_jobs

    model = tmp_path / "click.pt"
    model.write_bytes(b"stands for a click model")
    loads = []

    def slow_load(path, device):
        loads.append(path)
        time.sleep(0.3)
        return object()

    monkeypatch.setattr(worker_jobs, "make_click_refiner", slow_load)
    worker_jobs._CLICK_REFINERS.clear()
    got = []
    def click_job():
        got.append(worker_jobs._click_refiner(str(model), "cpu"))

    threads = [threading.Thread(target=click_job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worker_jobs._CLICK_REFINERS.clear()
    assert len(loads) == 1 and got[0] is got[1]
