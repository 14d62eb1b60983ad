"""The ONNX Runtime engine against the torch engine, its cache, and the torch-free CLI path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from napari_skinseg import onnx_engine
from napari_skinseg.engines import make_segmenter, resolve_engine
from napari_skinseg.synthetic import make_synthetic_lesion, write_synthetic_dataset


def dice(a, b):
    return 1.0 if not (a.any() or b.any()) else 2 * (a & b).sum() / (a.sum() + b.sum())


def test_onnx_and_torch_masks_agree(tiny_model_path):
    onnx = make_segmenter(tiny_model_path, engine="onnx")
    torch_ = make_segmenter(tiny_model_path, device="cpu", engine="torch")
    assert (onnx.engine, torch_.engine) == ("onnx", "torch")
    for seed, shape in ((1, (80, 80)), (2, (70, 130)), (3, (64, 64))):
        image, _ = make_synthetic_lesion(shape, seed=seed)
        for tta in (False, True):
            p_onnx = onnx.predict_probability(image, tta=tta)
            p_torch = torch_.predict_probability(image, tta=tta)
            assert p_onnx.shape == shape and np.abs(p_onnx - p_torch).max() < 1e-3
        assert dice(onnx.segment(image).mask, torch_.segment(image).mask) >= 0.995


def test_the_export_is_made_once_per_model_file(tiny_model_path, monkeypatch, onnx_cache):
    make_segmenter(tiny_model_path, engine="onnx")
    digest = onnx_engine.model_digest(tiny_model_path)
    assert (onnx_cache / f"{digest}.onnx").is_file() and (onnx_cache / f"{digest}.json").is_file()
    import napari_skinseg.onnx_export as export

    monkeypatch.setattr(export, "export_onnx", lambda *a: pytest.fail("exported twice"))
    make_segmenter(tiny_model_path, engine="onnx")  # from the cache
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".")]  # no temp files left


def test_engine_choice():
    assert resolve_engine("torch", "cpu") == "torch"
    assert resolve_engine("onnx", "cpu") == "onnx"
    assert resolve_engine("auto", "cpu") == "onnx"  # the faster one on a CPU
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_engine("onnx", "cuda")
    with pytest.raises(ValueError, match="unknown engine"):
        resolve_engine("tensorrt", "cpu")


def test_segmenting_with_onnx_needs_no_torch(tmp_path, tiny_model_path, onnx_cache):
    make_segmenter(tiny_model_path, engine="onnx")  # the cached export
    images, _ = write_synthetic_dataset(tmp_path / "d", 2, (64, 64), seed=8)
    code = ("import sys; from napari_skinseg.cli import main; "
            f"rc = main(['segment', {str(images)!r}, {str(tmp_path / 'R')!r}, '--model', "
            f"{str(tiny_model_path)!r}, '--engine', 'onnx']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SKINSEG_CACHE": str(onnx_cache)})
    assert done.stdout.strip().splitlines()[-1] == "0 False", done.stderr[-2000:]
    assert len(list((tmp_path / "R").glob("*_segmentation.png"))) == 2


def test_the_cache_keeps_the_most_recently_used_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path))
    for i in range(5):
        (tmp_path / f"{i}.onnx").write_bytes(b"x")
        (tmp_path / f"{i}.json").write_text("{}")
        os.utime(tmp_path / f"{i}.onnx", (1000 + i, 1000 + i))
    onnx_engine.prune_cache(keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.json", "3.onnx", "4.json", "4.onnx"]


def test_an_unwritable_cache_makes_auto_fall_back_to_torch(tmp_path, tiny_model_path, monkeypatch,
                                                           capsys):
    """A read-only home (HPC, containers) must not break the default engine: torch takes over
    with a warning; only an explicit --engine onnx fails, naming the folder."""
    from napari_skinseg.cli import main
    from napari_skinseg.engines import EngineFallbackWarning

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SKINSEG_CACHE", str(blocker / "cache"))
    with pytest.warns(EngineFallbackWarning, match="SKINSEG_CACHE"):
        segmenter = make_segmenter(tiny_model_path, device="cpu", engine="auto")
    assert segmenter.engine == "torch"
    with pytest.raises(OSError, match="a-file"):
        make_segmenter(tiny_model_path, device="cpu", engine="onnx")

    images, _ = write_synthetic_dataset(tmp_path / "d", 2, (64, 64), seed=9)
    assert main(["segment", str(images), str(tmp_path / "R"), "--model",
                 str(tiny_model_path)]) == 0
    assert len(list((tmp_path / "R").glob("*_segmentation.png"))) == 2
    assert "warning: ONNX Runtime not used" in capsys.readouterr().err
    assert main(["segment", str(images), str(tmp_path / "R2"), "--model", str(tiny_model_path),
                 "--engine", "onnx"]) != 0
    assert not (tmp_path / "R2").exists() or not list((tmp_path / "R2").glob("*_segmentation.png"))


def test_an_unwritable_cache_leaves_clicks_on_torch(tmp_path, tiny_model_path, monkeypatch):
    from napari_skinseg.click_model import ClickRefiner, make_click_model
    from napari_skinseg.engines import EngineFallbackWarning, make_click_refiner
    from napari_skinseg.model import load_model

    path = make_click_model(load_model(tiny_model_path)).save(tmp_path / "click.pt")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SKINSEG_CACHE", str(blocker / "cache"))
    with pytest.warns(EngineFallbackWarning):
        assert isinstance(make_click_refiner(path, device="cpu"), ClickRefiner)


def test_folder_engine_threads_sleep_and_click_engine_threads_spin(tiny_model_path, tmp_path):
    """Segmentation runs pipelined beside reading and writing threads, whose cores spinning
    ONNX Runtime threads would take; a click is one call at a time, where spinning saves time."""
    from napari_skinseg.click_model import make_click_model
    from napari_skinseg.engines import make_click_refiner
    from napari_skinseg.model import load_model

    key = "session.intra_op.allow_spinning"
    seg = make_segmenter(tiny_model_path, engine="onnx")
    assert seg.session.get_session_options().get_session_config_entry(key) == "0"
    click_path = make_click_model(load_model(tiny_model_path)).save(tmp_path / "click.pt")
    click = make_click_refiner(click_path, device="cpu", engine="onnx")
    assert click.session.get_session_options().get_session_config_entry(key) == "1"
