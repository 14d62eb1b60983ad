"""The ONNX Runtime engine against the torch engine, its cache, and the torch-free CLI path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# the cache module's names, imported by name (the folder fixture is onnx_cache_dir)
from napari_skinseg.engines import make_segmenter, resolve_engine
from napari_skinseg.onnx_cache import cache_dir, cached_export, model_digest, prune_cache
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


def test_the_export_is_made_once_per_model_file(tiny_model_path, monkeypatch, onnx_cache_dir):
    make_segmenter(tiny_model_path, engine="onnx")
    digest = model_digest(tiny_model_path)
    assert (onnx_cache_dir / f"{digest}.onnx").is_file() and (onnx_cache_dir / f"{digest}.json").is_file()
    import napari_skinseg.onnx_export as export

    monkeypatch.setattr(export, "export_onnx", lambda *a: pytest.fail("exported twice"))
    make_segmenter(tiny_model_path, engine="onnx")  # from the cache
    assert not [p for p in onnx_cache_dir.iterdir() if p.name.startswith(".")]  # no temp files left


def test_engine_choice():
    assert resolve_engine("torch", "cpu") == "torch"
    assert resolve_engine("onnx", "cpu") == "onnx"
    assert resolve_engine("onnx-int8", "auto") == "onnx-int8"  # asked for by name
    with pytest.raises(ValueError, match="onnx-int8 engine runs on the CPU"):
        resolve_engine("onnx-int8", "cuda")
    assert resolve_engine("auto", "cpu") == "onnx"  # the faster one on a CPU
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_engine("onnx", "cuda")
    with pytest.raises(ValueError, match="unknown engine"):
        resolve_engine("tensorrt", "cpu")


@pytest.mark.parametrize("engine", ["onnx", "onnx-int8"])
def test_segmenting_with_onnx_needs_no_torch(tmp_path, tiny_model_path, onnx_cache_dir, engine):
    make_segmenter(tiny_model_path, engine=engine)  # the cached export
    images, _ = write_synthetic_dataset(tmp_path / "d", 2, (64, 64), seed=8)
    code = ("import sys; from napari_skinseg.cli import main; "
            f"rc = main(['segment', {str(images)!r}, {str(tmp_path / 'R')!r}, '--model', "
            f"{str(tiny_model_path)!r}, '--engine', {engine!r}, '--review']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SKINSEG_CACHE": str(onnx_cache_dir)})
    assert done.stdout.strip().splitlines()[-1] == "0 False", done.stderr[-2000:]
    assert len(list((tmp_path / "R").glob("*_segmentation.png"))) == 2
    assert (tmp_path / "R" / "review.csv").is_file()  # the review queue, torch-free too


def test_the_cache_keeps_the_most_recently_used_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path))
    for i in range(5):
        (tmp_path / f"{i}.onnx").write_bytes(b"x")
        (tmp_path / f"{i}.json").write_text("{}")
        os.utime(tmp_path / f"{i}.onnx", (1000 + i, 1000 + i))
    (tmp_path / "1.int8.onnx").write_bytes(b"x")  # a model's int8 copy, used last
    (tmp_path / "1.int8.json").write_text("{}")
    (tmp_path / "3.int8.onnx").write_bytes(b"x")
    os.utime(tmp_path / "3.int8.onnx", (900, 900))
    # a file another run's pruning deleted between the listing and its stat() (a dangling
    # link reads the same): it failed the export that had just succeeded
    (tmp_path / "gone.onnx").symlink_to(tmp_path / "deleted-meanwhile.onnx")
    prune_cache(keep=2)
    (tmp_path / "gone.onnx").unlink()
    # an entry is every file of one model: the int8 copy keeps its fp32 export, and goes with it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "1.int8.json", "1.int8.onnx", "1.json", "1.onnx", "4.json", "4.onnx"]


def test_the_int8_engine_is_a_checked_quantised_copy(tiny_model_path, onnx_cache_dir):
    from napari_skinseg.onnx_quantize import MIN_AGREEMENT

    fp32 = make_segmenter(tiny_model_path, engine="onnx")
    int8 = make_segmenter(tiny_model_path, engine="onnx-int8")
    assert (fp32.engine, int8.engine) == ("onnx", "onnx-int8")
    digest = model_digest(tiny_model_path)
    note = json.loads((onnx_cache_dir / f"{digest}.int8.json").read_text())
    assert MIN_AGREEMENT <= note["agreement"] <= 1
    # a different network (quantised: QDQ nodes), smaller than the fp32 one
    q = onnx_cache_dir / f"{digest}.int8.onnx"
    assert q.stat().st_size < 0.6 * (onnx_cache_dir / f"{digest}.onnx").stat().st_size
    for seed, shape in ((21, (96, 96)), (22, (80, 120))):
        image, _ = make_synthetic_lesion(shape, seed=seed)
        p8, p32 = int8.predict_probability(image), fp32.predict_probability(image)
        assert p8.shape == shape and 0 < np.abs(p8 - p32).max() < 0.2
        assert dice(int8.segment(image).mask, fp32.segment(image).mask) >= 0.95


def test_an_int8_copy_that_drifts_is_refused(tmp_path, tiny_model_path, monkeypatch):
    from napari_skinseg import onnx_quantize
    from napari_skinseg.errors import ModelFileError

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_quantize, "MIN_AGREEMENT", 1.01)  # no copy can pass
    with pytest.raises(ModelFileError, match="use the onnx engine"):
        make_segmenter(tiny_model_path, engine="onnx-int8")
    left = sorted(p.name for p in (tmp_path / "cache").iterdir())
    # no int8 network is left: the fp32 export, and a note of the refusal
    assert [n for n in left if n.endswith(".int8.onnx")] == [] and len(left) == 3
    real_quantize = onnx_quantize.quantize_export
    monkeypatch.setattr(onnx_quantize, "quantize_export",
                        lambda *a: pytest.fail("quantised again to be refused again"))
    with pytest.raises(ModelFileError, match="use the onnx engine"):  # at once, from the note
        make_segmenter(tiny_model_path, engine="onnx-int8")
    monkeypatch.setattr(onnx_quantize, "quantize_export", real_quantize)
    monkeypatch.setattr(onnx_quantize, "MIN_AGREEMENT", 0.98)  # a rule the copy meets: made
    assert make_segmenter(tiny_model_path, engine="onnx-int8").engine == "onnx-int8"
    assert not list((tmp_path / "cache").glob("*refused*"))


def test_auto_runs_the_int8_copy_where_it_is_clearly_faster(tmp_path, tiny_model_path,
                                                             monkeypatch):
    """auto on a CPU: the int8 copy when its network ran >= INT8_MIN_SPEEDUP times as fast as
    fp32's here, timed once per model and kind of CPU (the record is kept in the cache)."""
    from napari_skinseg import onnx_quantize

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: (10.0, 5.0))
    assert make_segmenter(tiny_model_path, device="cpu", engine="auto").engine == "onnx-int8"
    assert make_segmenter(tiny_model_path, engine="onnx").engine == "onnx"  # asked: fp32
    record, = (tmp_path / "cache").glob("*.int8.speed.json")
    from napari_skinseg.onnx_cache import _cpu_name

    cpu = _cpu_name()
    assert json.loads(record.read_text()) == {cpu: {"fp32_ms": 10.0, "int8_ms": 5.0}}
    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: pytest.fail("timed again"))
    assert make_segmenter(tiny_model_path, engine="auto").engine == "onnx-int8"
    # a near tie keeps fp32 (torch's masks); another kind of CPU sharing the cache is timed anew
    record.write_text(json.dumps({cpu: {"fp32_ms": 10.0, "int8_ms": 9.0}}))
    assert make_segmenter(tiny_model_path, engine="auto").engine == "onnx"
    record.write_text(json.dumps({"another CPU": {"fp32_ms": 10.0, "int8_ms": 1.0}}))
    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: (10.0, 12.0))
    assert make_segmenter(tiny_model_path, engine="auto").engine == "onnx"
    assert set(json.loads(record.read_text())) == {"another CPU", cpu}
    record.write_text(json.dumps({cpu: {"fp32_ms": "fast", "int8_ms": None}}))  # damaged: timed
    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: (10.0, 5.0))
    assert make_segmenter(tiny_model_path, engine="auto").engine == "onnx-int8"


def test_auto_keeps_fp32_when_the_int8_copy_is_refused_or_cannot_be_made(
        tmp_path, tiny_model_path, monkeypatch):
    import warnings

    from napari_skinseg import onnx_quantize
    from napari_skinseg.engines import EngineFallbackWarning

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: (10.0, 5.0))
    monkeypatch.setattr(onnx_quantize, "MIN_AGREEMENT", 1.01)  # masks drift: refused, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_segmenter(tiny_model_path, engine="auto").engine == "onnx"
    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache2"))

    def broken(*args):
        raise RuntimeError("quantiser crashed")

    monkeypatch.setattr(onnx_quantize, "quantize_export", broken)
    with pytest.warns(EngineFallbackWarning, match="quantiser crashed"):
        segmenter = make_segmenter(tiny_model_path, engine="auto")
    image, _ = make_synthetic_lesion((64, 64), seed=4)
    assert segmenter.engine == "onnx" and segmenter.segment(image).mask.shape == (64, 64)


def test_pruning_removes_temporary_files_of_killed_exports_only_when_old(tmp_path, monkeypatch):
    import time

    from napari_skinseg.atomic import file_lock

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path))
    old, new = tmp_path / ".a.onnx.0badf00d.tmp", tmp_path / ".b.onnx.1badf00d.tmp"
    for leftover in (old, new):
        leftover.write_bytes(b"half an export")
    scratch = tmp_path / ".c.int8.onnx.k2x9_q4z.tmp"  # the quantiser's scratch folder
    (scratch / "ort.quant.x").mkdir(parents=True)
    (scratch / "ort.quant.x" / "augmented.onnx").write_bytes(b"model-sized")
    free, held = tmp_path / ".d.lock", tmp_path / ".e.lock"  # of killed / hung preparations
    free.touch()
    with file_lock(held, 1):
        for leftover in (old, scratch, free, held):
            os.utime(leftover, (time.time() - 2 * 3600,) * 2)
        prune_cache()
        assert held.exists()  # its holder's
    assert not old.exists() and new.exists()  # a young one may be another run's export
    assert not scratch.exists() and not free.exists()


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


def test_an_unwritable_cache_leaves_the_napari_worker_on_torch(tmp_path, tiny_model_path,
                                                               monkeypatch):
    """The worker resolves "auto" for its cache key, but must ask for "auto", not the "onnx" it
    resolved to, or napari's Segment fails where the CLI falls back."""
    from napari_skinseg import worker_jobs
    from napari_skinseg.engines import EngineFallbackWarning

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SKINSEG_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(worker_jobs, "_SEGMENTERS", {})
    with pytest.warns(EngineFallbackWarning):
        assert worker_jobs._segmenter(str(tiny_model_path), "cpu", "auto").engine == "torch"


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


def test_a_pipelined_onnx_run_gives_each_image_its_own_threads(tmp_path, tiny_model_path,
                                                               monkeypatch):
    """Two images in flight on 2 cores ran faster with one ONNX Runtime thread each than with
    two each (BENCHMARKS.md §9); the outputs are those of a serial run."""
    from napari_skinseg import folder_segmentation
    from napari_skinseg.generators import drain

    images, _ = write_synthetic_dataset(tmp_path / "d", 4, (72, 96), seed=5)
    seg = make_segmenter(tiny_model_path, engine="onnx")
    asked, with_threads = [], seg.with_threads
    monkeypatch.setattr(seg, "with_threads", lambda n: asked.append(n) or with_threads(n))
    monkeypatch.setattr(folder_segmentation.os, "cpu_count", lambda: 4)
    serial = drain(folder_segmentation.segment_folder(images, tmp_path / "serial", seg))
    piped = drain(folder_segmentation.segment_folder(images, tmp_path / "piped", seg, workers=2))
    assert asked == [2] and len(serial.written) == len(piped.written) == 4
    per_image = with_threads(2)
    assert per_image is with_threads(2) and per_image is not seg  # made once, kept
    assert per_image.session.get_session_options().intra_op_num_threads == 2
    for out in sorted((tmp_path / "serial").iterdir()):
        assert out.read_bytes() == (tmp_path / "piped" / out.name).read_bytes()


def test_a_damaged_cache_entry_is_made_again(tmp_path, tiny_model_path, monkeypatch):
    """A cached export cut short or garbled outside this program (a disk error, a sync tool)
    made every run fail with ONNX Runtime's traceback until the cache was emptied by hand."""
    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    image, _ = make_synthetic_lesion((64, 80), seed=31)
    expected = make_segmenter(tiny_model_path, engine="onnx").segment(image).mask
    make_segmenter(tiny_model_path, engine="onnx-int8")
    digest = model_digest(tiny_model_path)
    entry = tmp_path / "cache" / digest
    entry.with_suffix(".onnx").write_bytes(b"not an onnx file")
    entry.with_suffix(".int8.onnx").write_bytes(entry.with_suffix(".int8.onnx").read_bytes()[:500])
    again = make_segmenter(tiny_model_path, engine="onnx")
    assert np.array_equal(again.segment(image).mask, expected)
    assert make_segmenter(tiny_model_path, engine="onnx-int8").segment(image).mask.shape == (64, 80)
    entry.with_suffix(".json").write_text("{cut sh")  # damaged metadata: exported again too
    assert np.array_equal(make_segmenter(tiny_model_path, engine="onnx").segment(image).mask,
                          expected)
    assert json.loads(entry.with_suffix(".json").read_text())["size"] == again.size


def test_a_cache_emptied_after_loading_does_not_stop_a_pipelined_run(tmp_path, tiny_model_path,
                                                                    monkeypatch):
    """A segmenter kept loaded (the napari model worker) whose cached export is deleted or pruned
    afterwards: a folder run with several images in flight failed with ONNX Runtime's NO_SUCHFILE
    error when it opened the per-image sessions."""
    import shutil

    from napari_skinseg.folder_segmentation import segment_folder
    from napari_skinseg.generators import drain

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    images, _ = write_synthetic_dataset(tmp_path / "d", 3, (64, 64), seed=7)
    seg = make_segmenter(tiny_model_path, engine="onnx")
    serial = drain(segment_folder(images, tmp_path / "serial", seg))
    shutil.rmtree(tmp_path / "cache")
    piped = drain(segment_folder(images, tmp_path / "piped", seg, workers=2))
    assert len(serial.written) == len(piped.written) == 3 and not piped.failed
    for out in sorted((tmp_path / "serial").iterdir()):
        assert out.read_bytes() == (tmp_path / "piped" / out.name).read_bytes()


def test_an_onnx_segmenter_is_named_after_the_file_asked_for(tmp_path, tiny_model_path):
    """Exports are cached by content: a copy or renamed model file was shown under the name of
    the file first exported ("model: old.pt" for new.pt), in the CLI and in napari."""
    import shutil

    make_segmenter(tiny_model_path, engine="onnx")
    copy = shutil.copy(tiny_model_path, tmp_path / "renamed-model.pt")
    assert make_segmenter(copy, engine="onnx").name == "renamed-model.pt"
    assert make_segmenter(tiny_model_path, engine="onnx").name == tiny_model_path.name


def test_a_cache_folder_that_is_a_file_is_named_so(tmp_path, tiny_model_path, monkeypatch):
    """SKINSEG_CACHE naming a file said "cannot write <cache>/<digest>.onnx: file exists"."""
    from napari_skinseg.engines import EngineFallbackWarning

    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SKINSEG_CACHE", str(blocker))
    with pytest.raises(OSError, match="a part of the path is a file, not a folder"):
        make_segmenter(tiny_model_path, device="cpu", engine="onnx")
    with pytest.warns(EngineFallbackWarning, match="is a file, not a folder"):
        assert make_segmenter(tiny_model_path, device="cpu", engine="auto").engine == "torch"
    assert blocker.read_text() == "not a folder"


def test_a_model_file_replaced_during_its_export_is_not_cached_under_the_old_content(
        tmp_path, tiny_model_path, tiny_config, monkeypatch):
    """The cache is keyed by the file's content, hashed before the export read the file: a file
    retrained in place at that moment left the new network under the old content's key, used
    from then on for every file of that old content."""
    import shutil

    from napari_skinseg import onnx_export
    from napari_skinseg.model import SkinSegModel

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    old = shutil.copy(tiny_model_path, tmp_path / "old.pt")
    path = shutil.copy(tiny_model_path, tmp_path / "model.pt")
    new = SkinSegModel.new(tiny_config.replace(seed=5)).save(tmp_path / "new.pt")
    old_digest, new_digest = model_digest(old), model_digest(new)
    real_load = onnx_export.load_model

    def retrained_meanwhile(p):
        if not getattr(retrained_meanwhile, "done", False):
            retrained_meanwhile.done = True
            shutil.copy(new, path)  # the file is replaced after it was hashed
        return real_load(p)

    monkeypatch.setattr(onnx_export, "load_model", retrained_meanwhile)
    onnx_path, _ = cached_export(path)
    assert onnx_path.name == f"{new_digest}.onnx"
    assert not (tmp_path / "cache" / f"{old_digest}.onnx").exists()
    image, _ = make_synthetic_lesion((64, 64), seed=3)
    for model in (old, new):
        torch_p = make_segmenter(model, engine="torch").predict_probability(image)
        onnx_p = make_segmenter(model, engine="onnx").predict_probability(image)
        assert np.abs(torch_p - onnx_p).max() < 1e-4


def test_a_read_only_cache_with_the_export_in_it_is_used(tmp_path, tiny_model_path, monkeypatch):
    """Marking an entry as recently used failed on a read-only cache (prepared for a container or
    a shared machine): --engine onnx and onnx-int8 stopped with "the file system is read-only"
    though the export was there, and auto fell back to torch."""
    import errno

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    image, _ = make_synthetic_lesion((64, 64), seed=4)
    expected = {e: make_segmenter(tiny_model_path, engine=e).segment(image).mask
                for e in ("onnx", "onnx-int8")}

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("napari_skinseg.onnx_cache.os.utime", read_only)
    from napari_skinseg import onnx_quantize

    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: (10.0, 20.0))  # fp32 faster
    for engine in ("onnx", "onnx-int8", "auto"):
        segmenter = make_segmenter(tiny_model_path, device="cpu", engine=engine)
        assert segmenter.engine == ("onnx" if engine == "auto" else engine)
        assert np.array_equal(segmenter.segment(image).mask,
                              expected["onnx-int8" if engine == "onnx-int8" else "onnx"])


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the XDG folders of Linux")
def test_a_user_without_a_home_folder_is_asked_for_a_cache_folder(tmp_path, tiny_model_path,
                                                                  monkeypatch):
    """A container run as a user the system does not know, HOME unset: auto stopped with
    pathlib's "Could not determine home directory" traceback, where torch works."""
    from pathlib import Path

    from napari_skinseg.engines import EngineFallbackWarning

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("SKINSEG_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(no_home))
    with pytest.warns(EngineFallbackWarning, match="no home folder.*set SKINSEG_CACHE"):
        assert make_segmenter(tiny_model_path, device="cpu", engine="auto").engine == "torch"
    with pytest.raises(OSError, match="no home folder"):
        make_segmenter(tiny_model_path, device="cpu", engine="onnx")
    # an absolute XDG_CACHE_HOME needs no home; an empty or relative one is ignored (XDG rule),
    # not a cache in whatever folder a run starts in
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "napari-skinseg" / "onnx"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    for ignored in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert cache_dir() == tmp_path / "home" / ".cache" / "napari-skinseg" / "onnx"


def test_damaged_entries_the_int8_path_reads_are_made_again(tmp_path, tiny_model_path,
                                                            monkeypatch):
    """Damage that the fp32 repair (_from_cache) did not reach: a damaged int8 copy not yet
    timed made auto warn and run fp32 on every run; a damaged fp32 export not yet quantised
    stopped --engine onnx-int8 with a protobuf traceback on every run; metadata without the
    mean, and a garbled refusal note, stopped or warned on every run too."""
    import warnings

    from napari_skinseg import onnx_quantize

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    timed, real_network_ms = [], onnx_quantize.network_ms

    def network_ms(*args):  # the real timing (it loads both networks), then a clear winner
        timed.append(real_network_ms(*args))
        return 10.0, 5.0

    monkeypatch.setattr(onnx_quantize, "network_ms", network_ms)
    image, _ = make_synthetic_lesion((64, 64), seed=12)
    expected = make_segmenter(tiny_model_path, engine="onnx-int8").segment(image).mask
    entry = tmp_path / "cache" / model_digest(tiny_model_path)
    int8 = entry.with_suffix(".int8.onnx")
    int8.write_bytes(int8.read_bytes()[:500])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # made again silently
        segmenter = make_segmenter(tiny_model_path, device="cpu", engine="auto")
        assert segmenter.engine == "onnx-int8" and len(timed) == 1
        assert np.array_equal(segmenter.segment(image).mask, expected)

        for leftover in tmp_path.joinpath("cache").glob("*.int8.*"):
            leftover.unlink()
        entry.with_suffix(".onnx").write_bytes(b"not an onnx file")
        segmenter = make_segmenter(tiny_model_path, device="cpu", engine="onnx-int8")
        assert np.array_equal(segmenter.segment(image).mask, expected)

        entry.with_suffix(".json").write_text(json.dumps({"size": 64}))  # valid JSON, no mean
        assert np.array_equal(make_segmenter(tiny_model_path, engine="onnx").segment(image).mask,
                              make_segmenter(tiny_model_path, engine="torch").segment(image).mask)
        assert "mean" in json.loads(entry.with_suffix(".json").read_text())

        for leftover in tmp_path.joinpath("cache").glob("*.int8.*"):
            leftover.unlink()
        entry.with_suffix(".int8-refused.json").write_text(json.dumps({"agreement": "low"}))
        assert make_segmenter(tiny_model_path, engine="onnx-int8").engine == "onnx-int8"


def test_a_quantiser_or_onnxruntime_that_fails_says_so_in_a_sentence(tmp_path, tiny_model_path,
                                                                     monkeypatch, capsys):
    """--engine onnx-int8 where the quantiser itself fails printed its traceback; auto where ONNX
    Runtime cannot load even a fresh export stopped ("use --engine torch") instead of running
    torch itself."""
    import onnxruntime
    import onnxruntime.quantization

    from napari_skinseg.cli import main
    from napari_skinseg.engines import EngineFallbackWarning
    from napari_skinseg.errors import ModelFileError

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))

    def crashes(*args, **kwargs):
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", crashes)
    with pytest.raises(ModelFileError, match=r"could not be made \(unsupported operator Foo\)"):
        make_segmenter(tiny_model_path, engine="onnx-int8")
    images, _ = write_synthetic_dataset(tmp_path / "d", 1, (64, 64), seed=13)
    assert main(["segment", str(images), str(tmp_path / "R"), "--model", str(tiny_model_path),
                 "--engine", "onnx-int8"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "use the onnx engine" in err
    with pytest.warns(EngineFallbackWarning, match=r"not used \(unsupported operator Foo\)"):
        assert make_segmenter(tiny_model_path, device="cpu", engine="auto").engine == "onnx"

    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def cannot_load(*args, **kwargs):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : broken install")

    monkeypatch.setattr(onnxruntime, "InferenceSession", cannot_load)
    with pytest.warns(EngineFallbackWarning) as said:
        assert make_segmenter(tiny_model_path, device="cpu", engine="auto").engine == "torch"
    assert "it cannot load the model's export (" in str(said[-1].message)
    with pytest.raises(ModelFileError, match="use --engine torch"):
        make_segmenter(tiny_model_path, device="cpu", engine="onnx")


_PREPARING_RUN = """
import os, sys, time
from pathlib import Path
from napari_skinseg import onnx_export, onnx_quantize
from napari_skinseg.engines import make_segmenter

model, folder, who = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def counted(module, name, result=None):
    real = getattr(module, name)
    def run(*args):
        with open(folder / "steps.log", "a") as fh:
            fh.write(name + "\\n")
        time.sleep(0.5)  # long enough for the other process to start the same step
        return result if result is not None else real(*args)
    setattr(module, name, run)

counted(onnx_export, "export_onnx")
counted(onnx_quantize, "quantize_export")
# each process would time differently: "a" finds int8 clearly faster, "b" slower
counted(onnx_quantize, "network_ms", (10.0, 5.0) if who == "a" else (10.0, 12.0))
(folder / f"ready-{who}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
print(make_segmenter(model, device="cpu", engine="auto").engine)
"""


def test_two_processes_preparing_one_model_take_turns(tmp_path, tiny_model_path):
    """Two runs started together on an empty cache (napari's model worker and `skinseg segment`)
    both exported, quantised and timed the model, each timing while the other kept the CPU
    busy: they could choose different engines for one model on one machine."""
    import time

    env = {**os.environ, "SKINSEG_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.Popen([sys.executable, "-c", _PREPARING_RUN, str(tiny_model_path),
                              str(tmp_path), who], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for who in "ab"]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{who}").exists() for who in "ab"):
        assert time.monotonic() < deadline and all(r.poll() is None for r in runs)
        time.sleep(0.02)
    (tmp_path / "go").touch()  # both start preparing at once
    outputs = [r.communicate(timeout=120) for r in runs]
    engines = [out.strip().splitlines()[-1] if out.strip() else err[-2000:]
               for out, err in outputs]
    assert engines[0] == engines[1] in ("onnx", "onnx-int8"), engines
    steps = (tmp_path / "steps.log").read_text().split()
    assert sorted(steps) == ["export_onnx", "network_ms", "quantize_export"]  # each done once
    assert not list((tmp_path / "cache").glob(".*"))  # no lock or temporary file left


def test_a_stopped_process_preparing_the_model_is_not_waited_for_forever(
        tmp_path, tiny_model_path, monkeypatch):
    """A process holding the preparation lock that is stopped (SIGSTOP) or hung: the others
    wait PREPARE_WAIT_S, then prepare without the lock; a dead holder's lock is released."""
    import signal
    import time

    if not hasattr(signal, "SIGSTOP"):
        pytest.skip("POSIX signals")
    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / f"{model_digest(tiny_model_path)}.onnx"
    code = ("import os, signal, sys; from pathlib import Path; "
            "from napari_skinseg.onnx_cache import _preparing\n"
            f"with _preparing(Path({str(entry)!r})):\n"
            "    print('held', flush=True); os.kill(os.getpid(), signal.SIGSTOP)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    from napari_skinseg import onnx_quantize

    monkeypatch.setattr(onnx_quantize, "network_ms", lambda *a: (10.0, 5.0))
    from napari_skinseg.onnx_cache import file_lock as real_lock

    waits = []

    def file_lock(path, wait_s):
        waits.append(wait_s)
        return real_lock(path, wait_s)

    monkeypatch.setattr("napari_skinseg.onnx_cache.file_lock", file_lock)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("napari_skinseg.onnx_cache.PREPARE_WAIT_S", 1.0)
        start = time.monotonic()
        assert make_segmenter(tiny_model_path, device="cpu", engine="auto").engine == "onnx-int8"
        assert 1.0 <= time.monotonic() - start < 30
        # waited once: its int8 copy and timing did not wait for the stopped holder again
        assert waits == [1.0, 0.0, 0.0]
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setattr("napari_skinseg.onnx_cache.PREPARE_WAIT_S", 60.0)
    # a fresh process would wait 60 s
    monkeypatch.setattr("napari_skinseg.onnx_cache._GAVE_UP", set())
    entry.unlink()  # prepared again: the killed holder's lock is not waited for
    start = time.monotonic()
    assert make_segmenter(tiny_model_path, engine="onnx").engine == "onnx"
    assert time.monotonic() - start < 30 and entry.is_file()


def test_the_preparation_lock_is_per_model_and_removed_by_its_holder(tmp_path):
    """Another model's preparation does not wait; a waiter whose lock file was removed by the
    holder letting go locks the new one (never two holders at once)."""
    import threading

    from napari_skinseg.atomic import file_lock

    order = []
    with file_lock(tmp_path / ".a.lock", 5) as held:
        assert held and (tmp_path / ".a.lock").exists()
        with file_lock(tmp_path / ".b.lock", 5) as other:
            assert other  # per model: not blocked by a's
        with file_lock(tmp_path / ".a.lock", 0.2) as again:
            assert not again  # held elsewhere (another descriptor): timed out, not held

        def waiter():
            with file_lock(tmp_path / ".a.lock", 5) as got:
                order.append(("waiter", got))

        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.3)
        order.append(("holder", True))
    thread.join(10)
    assert order == [("holder", True), ("waiter", True)]
    assert not (tmp_path / ".a.lock").exists() and not (tmp_path / ".b.lock").exists()


def test_a_quantiser_failure_is_remembered_until_onnxruntime_changes(tmp_path, tiny_model_path,
                                                                     monkeypatch):
    """auto spent seconds on every run quantising a model its quantiser fails on."""
    import onnxruntime.quantization

    from napari_skinseg.engines import EngineFallbackWarning

    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    calls = []

    def crashes(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", crashes)
    for _ in range(2):
        with pytest.warns(EngineFallbackWarning, match=r"not used \(unsupported operator Foo\)"):
            assert make_segmenter(tiny_model_path, device="cpu", engine="auto").engine == "onnx"
    assert len(calls) == 1  # the second run read the note
    note, = (tmp_path / "cache").glob("*.int8-failed.json")
    assert json.loads(note.read_text())["versions"]["onnxruntime"] == onnxruntime.__version__
    monkeypatch.setattr(onnxruntime, "__version__", "99.0")  # another onnxruntime: tried again
    with pytest.warns(EngineFallbackWarning):
        make_segmenter(tiny_model_path, device="cpu", engine="auto")
    assert len(calls) == 2
    from napari_skinseg.errors import ModelFileError

    with pytest.raises(ModelFileError, match="unsupported operator Foo"):  # asked for: tried
        make_segmenter(tiny_model_path, engine="onnx-int8")
    assert len(calls) == 3
    monkeypatch.undo()
    monkeypatch.setenv("SKINSEG_CACHE", str(tmp_path / "cache"))
    assert make_segmenter(tiny_model_path, engine="onnx-int8").engine == "onnx-int8"
    assert not note.exists()  # made at last: the note goes


_KILLED_QUANTISING = """
import os, sys, time
from pathlib import Path
from napari_skinseg import onnx_cache, onnx_quantize

ready = Path(sys.argv[2])
real_inputs = onnx_quantize._inputs

def stalls(metadata, n, seed):  # the quantiser's calibration stalls on its second example
    first, *_ = real_inputs(metadata, 1, seed)
    yield first
    ready.touch()
    time.sleep(600)

onnx_quantize._inputs = stalls
onnx_cache.cached_int8_export(sys.argv[1])
"""


def test_a_preparation_killed_midway_leaves_nothing_behind_the_next_one(tmp_path,
                                                                        tiny_model_path,
                                                                        monkeypatch):
    """kill -9 while quantising left an int8 .tmp file in the cache (removed after an hour) and
    the quantiser's model-sized scratch folders in /tmp (never removed)."""
    import signal
    import time

    cache, scratch = tmp_path / "cache", tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("SKINSEG_CACHE", str(cache))
    cached_export(tiny_model_path)  # the fp32 export: the run below needs no torch
    ready = tmp_path / "ready"
    run = subprocess.Popen([sys.executable, "-c", _KILLED_QUANTISING, str(tiny_model_path),
                            str(ready)], env={**os.environ, "TMPDIR": str(scratch)},
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert run.poll() is None, run.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    # the quantiser's scratch folders are in the cache entry's temporary space (onnxruntime's
    # import writes a 51-byte .ses file here, not the quantiser)
    assert [p.name for p in scratch.iterdir() if p.is_dir() or p.stat().st_size > 1000] == []
    assert list(cache.glob(".*.tmp"))
    assert make_segmenter(tiny_model_path, engine="onnx-int8").engine == "onnx-int8"
    assert not list(cache.glob(".*"))  # the next preparation removed the leftovers
