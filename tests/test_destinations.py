"""Class 1: destinations that cannot be written fail up front or in one line, with exit 2, and
never leave half-written files, empty CSVs or temporary files behind."""

import errno
import shutil

import numpy as np
import pytest
from PIL import Image

import napari_skinseg.atomic as atomic
import napari_skinseg.destinations as destinations
import napari_skinseg.evaluation  # noqa: F401  (bound to the real pairs functions before patching)
import napari_skinseg.folder_segmentation  # noqa: F401
from napari_skinseg.atomic import atomic_write, stale_temp_files
from napari_skinseg.cli import main
from napari_skinseg.destinations import WriteError, check_output_file, check_output_folder
from napari_skinseg.image_io import read_image, write_image
from napari_skinseg.model import load_model
from napari_skinseg.training import checkpoint_path

TINY_TRAIN = ["--size", "64", "--batch-size", "3", "--decoder-channels", "32,16,16,8,8",
              "--device", "cpu"]


@pytest.fixture
def inputs(tmp_path, synthetic_folder):
    return tuple(shutil.copytree(p, tmp_path / p.name) for p in synthetic_folder)


def _no_data_reading(monkeypatch):
    """Fail the test if a command reads its data (it should have stopped before)."""
    import napari_skinseg.pairs as pairs

    def forbidden(*args, **kwargs):
        raise AssertionError("the data were read before the destination was checked")

    monkeypatch.setattr(pairs, "find_pairs", forbidden)
    monkeypatch.setattr(pairs, "list_images", forbidden)


def _one_line_error(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])


def _hidden_files(folder):
    return [p for p in folder.rglob(".*") if p.is_file()]


def test_read_only_destination_is_refused_before_reading_data(tmp_path, inputs, monkeypatch, capsys):
    real_open = destinations.os.open

    def read_only(path, *args, **kwargs):  # the write test of a read-only mount (root included)
        if "skinseg-write-test" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(destinations.os, "open", read_only)
    _no_data_reading(monkeypatch)
    images, masks = inputs
    out = tmp_path / "ro" / "model.pt"
    assert main(["train", str(images), str(masks), "--out", str(out), *TINY_TRAIN]) == 2
    _one_line_error(capsys.readouterr().err, "cannot write", str(out), "read-only")
    assert main(["measure", str(images), str(masks), "--out", str(tmp_path / "m.csv")]) == 2
    _one_line_error(capsys.readouterr().err, "m.csv", "read-only")
    assert main(["sample", str(tmp_path / "s")]) == 2
    _one_line_error(capsys.readouterr().err, "read-only")
    assert not out.parent.exists() and not (tmp_path / "s").exists()


def test_results_under_a_file_and_out_that_is_a_folder(tmp_path, inputs, tiny_model_path, monkeypatch, capsys):
    images, masks = inputs
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    import napari_skinseg.prediction as prediction

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the results folder was checked")

    monkeypatch.setattr(prediction.Segmenter, "from_file", no_model)
    assert main(["segment", str(images), str(blocker / "Results")]) == 2
    _one_line_error(capsys.readouterr().err, str(blocker), "is a file, not a folder")
    assert main(["segment", str(images), str(blocker)]) == 2
    _one_line_error(capsys.readouterr().err, "is a file, not a folder")
    _no_data_reading(monkeypatch)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    for command in (["train", str(images), str(masks), "--out", str(folder), *TINY_TRAIN],
                    ["measure", str(images), str(masks), "--out", str(folder)],
                    ["evaluate", str(images), str(masks), "--csv", str(folder)]):
        assert main(command) == 2
        _one_line_error(capsys.readouterr().err, str(folder), "is a folder")
    assert list(folder.iterdir()) == []


def test_full_disk_while_segmenting_is_one_line_and_a_rerun_completes(tmp_path, inputs, tiny_model_path,
                                                                      monkeypatch, capsys):
    images, _ = inputs
    results = tmp_path / "Results"
    real_save = Image.Image.save
    calls = []

    def disk_fills_up(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) >= 4:  # the fourth file: half of it fits, then the disk is full
            with open(fp, "wb") as fh:
                fh.write(b"\x89PNG\r\n\x1a\n half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_fills_up)
    code = main(["segment", str(images), str(results), "--model", str(tiny_model_path), "--overlay",
                 "--measure"])
    assert code == 2
    err = capsys.readouterr().err
    _one_line_error(err, "cannot write", str(results), "no space left on device")
    assert _hidden_files(results) == []  # no temporary files
    for path in results.iterdir():  # whatever has a real name is complete
        assert path.suffix == ".csv" or read_image(path).shape[:2] == (96, 128)
    assert len(list(results.glob("*_segmentation.png"))) == 2
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert main(["segment", str(images), str(results), "--model", str(tiny_model_path), "--overlay",
                 "--measure"]) == 0
    assert len(list(results.glob("*_segmentation.png"))) == 6
    assert len(list(results.glob("*_overlay.png"))) == 6
    assert len((results / "measurements.csv").read_text().splitlines()) == 7


def test_full_disk_during_a_checkpoint_then_resume(tmp_path, inputs, monkeypatch, capsys):
    import napari_skinseg.model as model_module

    images, masks = inputs
    out = tmp_path / "run" / "m.pt"
    real_save = model_module.torch.save
    saves = []

    def full_on_second_checkpoint(payload, fh, *args, **kwargs):
        saves.append(payload["format"])
        if saves.count("napari-skinseg-model-checkpoint") == 2:
            fh.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(payload, fh, *args, **kwargs)

    monkeypatch.setattr(model_module.torch, "save", full_on_second_checkpoint)
    command = ["train", str(images), str(masks), "--out", str(out), "--epochs", "3", *TINY_TRAIN]
    assert main(command) == 2
    _one_line_error(capsys.readouterr().err, "cannot write", "m.pt.checkpoint.pt", "no space left")
    assert _hidden_files(out.parent) == []
    assert checkpoint_path(out).exists()  # epoch 1's checkpoint is intact
    monkeypatch.setattr(model_module.torch, "save", real_save)
    assert main(command + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "epoch 2/3" in text and "epoch 1/3" not in text  # continued, not restarted
    assert load_model(out).metadata.status == "complete" and not checkpoint_path(out).exists()


def test_a_disk_that_fills_inside_torch_save_is_one_line(tmp_path, inputs, monkeypatch, capsys):
    """A real full disk fails a write *inside* torch.save; torch's zip writer then raised its own
    RuntimeError ("unexpected pos ...") over the OSError, and training ended in a traceback."""
    import builtins

    import napari_skinseg.model as model_module

    class FillsUp:  # the file system refuses every byte past the first 100 kB of a file
        def __init__(self, path, mode="r", *args, **kwargs):
            self.fh, self.written = builtins.open(path, mode, *args, **kwargs), 0

        def write(self, data):
            self.written += len(data)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    images, masks = inputs
    out = tmp_path / "run" / "m.pt"
    monkeypatch.setattr(model_module, "open", FillsUp, raising=False)
    assert main(["train", str(images), str(masks), "--out", str(out), "--epochs", "1",
                 *TINY_TRAIN]) == 2
    _one_line_error(capsys.readouterr().err, "cannot write", "m.pt", "no space left on device")
    assert _hidden_files(tmp_path / "run") == [] and not out.exists()


def test_resume_after_a_kill_during_the_first_checkpoint_write(tmp_path, inputs, capsys):
    from napari_skinseg.config import TrainConfig
    from napari_skinseg.model import SkinSegModel

    images, masks = inputs
    out = tmp_path / "m.pt"
    # What a kill -9 in the middle of the first checkpoint write can leave: the temporary file of
    # the checkpoint and (with an older ordering of the writes) an unfinished model, no checkpoint.
    unfinished = SkinSegModel.new(TrainConfig(size=64, decoder_channels=(32, 16, 16, 8, 8)))
    unfinished.metadata.status = "in progress"
    unfinished.save(out)
    stray = atomic.temp_path_for(checkpoint_path(out))
    stray.write_bytes(b"PK\x03\x04 half a checkpoint")
    assert stale_temp_files(checkpoint_path(out)) == [stray]
    # and a kill while the curves of an earlier run were written (they were never removed)
    atomic.temp_path_for(tmp_path / "m_curves.png").write_bytes(b"\x89PNG half")
    assert main(["train", str(images), str(masks), "--out", str(out), "--epochs", "1",
                 "--resume", *TINY_TRAIN]) == 0
    assert "unfinished model of an interrupted run" in capsys.readouterr().out
    assert load_model(out).metadata.status == "complete"
    assert _hidden_files(tmp_path) == []  # the stray temporary file is gone
    # a finished model is never replaced that way
    assert main(["train", str(images), str(masks), "--out", str(out), "--epochs", "1",
                 "--resume", *TINY_TRAIN]) == 2
    assert "exists" in capsys.readouterr().err


def test_full_disk_never_leaves_an_empty_csv(tmp_path, inputs, monkeypatch, capsys):
    images, masks = inputs
    results = tmp_path / "pred"
    shutil.copytree(masks, results)

    class FullFile:
        def __init__(self, path, *args, **kwargs):
            self.fh = open(path, "wb")

        def write(self, text):
            self.fh.write(text[:10].encode())
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(atomic, "open", FullFile, raising=False)
    assert main(["evaluate", str(results), str(masks)]) == 2
    _one_line_error(capsys.readouterr().err, "evaluation.csv", "no space left on device")
    assert not (results / "evaluation.csv").exists() and _hidden_files(results) == []
    monkeypatch.undo()
    assert main(["evaluate", str(results), str(masks)]) == 0  # nothing blocks the rerun


def test_helpers_name_the_path_and_the_cause(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_output_file(tmp_path)
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(FileExistsError, match="x.csv exists"):
        check_output_file(tmp_path / "x.csv")
    check_output_file(tmp_path / "x.csv", overwrite=True)
    with pytest.raises(WriteError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "x.csv" / "sub")

    def fails(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as err:
        atomic_write(tmp_path / "y.png", fails)
    assert str(err.value) == f"cannot write {tmp_path / 'y.png'}: no space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]
    # no-clobber: a file that appears while another is being written is never replaced
    write_image(tmp_path / "z.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "z.png", lambda tmp: open(tmp, "wb").close(), overwrite=False)
    assert read_image(tmp_path / "z.png").shape == (8, 8, 3)
