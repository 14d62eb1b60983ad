import csv
import shlex
import shutil

import numpy as np
import pytest

from napari_skinseg import bundled
from napari_skinseg.cli import main
from napari_skinseg.image_io import read_image, read_mask
from napari_skinseg.model import load_model


@pytest.fixture
def inputs(tmp_path, synthetic_folder):
    images, masks = (shutil.copytree(p, tmp_path / p.name) for p in synthetic_folder)
    return images, masks


def test_train_writes_model_history_and_curves(tmp_path, inputs, capsys):
    images, masks = inputs
    out = tmp_path / "run" / "model.pt"
    code = main(["train", str(images), str(masks), "--out", str(out), "--epochs", "2", "--size", "64",
                 "--batch-size", "3", "--decoder-channels", "32,16,16,8,8", "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "epoch 1/2" in text and "epoch 2/2" in text and "5:1 split" in text
    assert out.exists() and (tmp_path / "run" / "model_curves.png").stat().st_size > 5000
    with open(tmp_path / "run" / "model_history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[0]["val_accuracy"]) >= 0
    # an existing model is never overwritten by accident
    assert main(["train", str(images), str(masks), "--out", str(out), "--size", "64"]) == 2
    assert "exists" in capsys.readouterr().err
    # the model's metadata repeats the run from the command line: its config and both folders
    # (only the images folder was recorded, so the masks folder had to be remembered)
    meta = load_model(out).metadata
    images_dir, masks_dir = meta.data["sources"]
    again = tmp_path / "again.pt"
    assert main(shlex.split(meta.config.cli_command(images_dir, masks_dir, str(again)))[1:]) == 0
    assert load_model(again).metadata.config == meta.config
    assert load_model(again).metadata.metrics == meta.metrics


def test_a_limited_run_is_repeated_from_its_metadata_with_the_same_pairs(tmp_path, inputs):
    # --limit was not recorded: the repeat command from the model's metadata used every pair.
    images, masks = inputs
    out = tmp_path / "limited.pt"
    assert main(["train", str(images), str(masks), "--out", str(out), "--epochs", "1", "--size",
                 "64", "--decoder-channels", "16,8,8,8,8", "--device", "cpu", "--limit", "4",
                 "--seed", "3"]) == 0
    meta = load_model(out).metadata
    assert meta.config.limit == 4 and meta.data["n_train"] + meta.data["n_val"] == 4
    command = meta.config.cli_command(*meta.data["sources"], str(tmp_path / "again.pt"))
    assert "--limit 4" in command
    assert main(shlex.split(command)[1:]) == 0
    again = load_model(tmp_path / "again.pt").metadata
    assert again.config == meta.config and again.data["val_names"] == meta.data["val_names"]
    assert again.metrics == meta.metrics


def test_ctrl_c_while_the_history_is_written_still_writes_it(tmp_path, inputs, monkeypatch,
                                                              capsys):
    # A Ctrl-C after the last epoch left a complete model without history or curves, and the
    # same command was then refused because the model existed.
    import os
    import signal

    from napari_skinseg import history

    images, masks = inputs
    write = history.write_history_csv

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the person presses Ctrl-C now
        return write(*args, **kwargs)

    monkeypatch.setattr(history, "write_history_csv", interrupted)
    out = tmp_path / "m.pt"
    # Python's own Ctrl-C handler, also where this run started with SIGINT ignored (nohup, &)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["train", str(images), str(masks), "--out", str(out), "--epochs", "1",
                     "--size", "64", "--decoder-channels", "16,8,8,8,8", "--device", "cpu"]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, before)
    assert (tmp_path / "m_history.csv").is_file() and (tmp_path / "m_curves.png").is_file()
    assert "one moment" in capsys.readouterr().err


def test_segment_then_evaluate(tmp_path, inputs, tiny_model_path, capsys):
    images, masks = inputs
    results = tmp_path / "Results"
    code = main(["segment", str(images), str(results), "--model", str(tiny_model_path),
                 "--overlay", "--probabilities"])
    assert code == 0
    names = sorted(p.name for p in results.iterdir())
    stems = sorted(p.stem for p in images.iterdir())
    assert names == sorted(f"{s}_{kind}.png" for s in stems for kind in ("overlay", "probability", "segmentation"))
    first = stems[0]
    mask = read_image(results / f"{first}_segmentation.png")
    assert mask.shape[:2] == read_image(images / f"{first}.png").shape[:2] == (96, 128)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    capsys.readouterr()
    assert main(["evaluate", str(results), str(masks)]) == 0
    out = capsys.readouterr().out
    assert "6 images scored of 6 true masks" in out and "mean dice" in out
    with open(results / "evaluation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and "mean" not in [r["id"] for r in rows]  # a plain table
    assert main(["evaluate", str(results), str(masks)]) == 2  # no silent overwrite of the CSV


def test_segment_reports_bad_files_and_keeps_existing_outputs(tmp_path, inputs, tiny_model_path, capsys):
    images, _ = inputs
    results = tmp_path / "out"
    bad = sorted(images.iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:50])
    (images / "notes.txt").write_text("x")
    (images / "tiny.png").write_bytes(b"")
    from napari_skinseg.image_io import write_image
    write_image(images / "dot.png", np.zeros((1, 1, 3), np.uint8))
    code = main(["segment", str(images), str(results), "--model", str(tiny_model_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"failed: {bad.name}: not a readable image" in out
    assert "dot.png: image is 1x1 pixels" in out and "skipped notes.txt" in out
    assert "5 segmented, 3 failed, 1 skipped" in out
    kept = sorted(results.iterdir())[0]
    before = kept.read_bytes()
    kept.write_bytes(b"user data")
    assert main(["segment", str(images), str(results), "--model", str(tiny_model_path)]) == 1
    assert kept.read_bytes() == b"user data"
    assert "5 kept because their outputs exist" in capsys.readouterr().out
    assert main(["segment", str(images), str(results), "--model", str(tiny_model_path), "--overwrite"]) == 1
    assert kept.read_bytes() == before


def test_results_folder_placement(tmp_path, inputs, tiny_model_path, capsys):
    images, _ = inputs
    assert main(["segment", str(images), str(images), "--model", str(tiny_model_path)]) == 2
    assert "must differ from the input folder" in capsys.readouterr().err
    assert main(["segment", str(images), str(images / "Results"), "--model", str(tiny_model_path)]) == 0
    assert "results folder is inside the input folder" in capsys.readouterr().out
    assert main(["segment", str(images), str(images / "Results"), "--model", str(tiny_model_path)]) == 0
    assert "6 kept" in capsys.readouterr().out  # the Results sub-folder was not read as input


def test_an_earlier_runs_outputs_in_the_input_folder_are_not_segmented(tmp_path, inputs,
                                                                        tiny_model_path, capsys):
    # a folder that holds images beside an earlier run's masks, overlays and probability maps:
    # the overlays and maps were segmented as photographs (a_overlay_segmentation.png, ...)
    images, _ = inputs
    first = tmp_path / "first"
    assert main(["segment", str(images), str(first), "--model", str(tiny_model_path),
                 "--overlay", "--probabilities"]) == 0
    for path in first.iterdir():
        shutil.copy(path, images / path.name)
    results = tmp_path / "again"
    assert main(["segment", str(images), str(results), "--model", str(tiny_model_path)]) == 0
    out = capsys.readouterr().out
    assert "6 segmented, 18 skipped" in out and "named like an overlay or probability map" in out
    assert len(list(results.iterdir())) == 6


def test_empty_folder_and_bad_model(tmp_path, inputs, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.pt").write_bytes(b"not a model")
    images, _ = inputs
    assert main(["segment", str(images), str(tmp_path / "o"), "--model", str(tmp_path / "fake.pt")]) == 2
    assert "fake.pt is not a readable napari-skinseg model file" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "empty"), str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "no image/mask pairs" in capsys.readouterr().err


def test_segment_given_a_pair_folder_names_its_images_folder(tmp_path, tiny_model_path, capsys):
    # `skinseg sample samples` then `skinseg segment samples Results` (train takes a pair
    # folder) said only "no images found in samples"
    from napari_skinseg.synthetic import write_synthetic_dataset

    images, _ = write_synthetic_dataset(tmp_path / "samples", 1, (64, 64), seed=0)
    assert main(["segment", str(tmp_path / "samples"), str(tmp_path / "o"),
                 "--model", str(tiny_model_path), "--device", "cpu"]) == 2
    assert f"no images found in {tmp_path / 'samples'}; it is a pair folder: give {images}" \
        in capsys.readouterr().err


def test_segment_without_model_explains_when_nothing_is_bundled(tmp_path, inputs, monkeypatch, capsys):
    def missing():
        raise bundled.BundledModelMissing("this installation of napari-skinseg has no bundled model yet")

    monkeypatch.setattr(bundled, "bundled_model_path", missing)
    assert main(["segment", str(inputs[0]), str(tmp_path / "o")]) == 2
    assert "no bundled model" in capsys.readouterr().err


def test_sample_command(tmp_path):
    assert main(["sample", str(tmp_path / "s"), "--n", "2", "--size", "64"]) == 0
    masks = sorted((tmp_path / "s" / "masks").iterdir())
    assert len(masks) == 2 and read_mask(masks[0]).any()


@pytest.mark.parametrize("option, value, message", [
    # "--seed -5" ended with numpy's "error: expected non-negative integer", naming no option
    ("--seed", "-5", "argument --seed: must be zero or more, got '-5'"),
    # --size 100000 was killed by the system for want of memory, with no message
    ("--size", "100000", "argument --size: must be from 8 to 8192, got '100000'"),
])
def test_sample_refuses_a_bad_number_naming_its_option(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", str(tmp_path / "s"), option, value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_a_folder_given_as_the_model_is_called_a_folder(tmp_path, inputs, capsys, engine,
                                                        onnx_cache_dir):
    # "model file runs does not exist" for a folder that plainly exists
    images, _ = inputs
    (tmp_path / "runs").mkdir()
    code = main(["segment", str(images), str(tmp_path / "out"), "--model", str(tmp_path / "runs"),
                 "--engine", engine])
    assert code != 0
    assert "runs is a folder; choose the .pt file inside it" in capsys.readouterr().err


def test_sample_never_replaces_existing_files(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "s"), "--n", "1", "--size", "64"]) == 0
    mask = tmp_path / "s" / "masks" / "synth_000_0000_segmentation.png"
    mask.write_bytes(b"a mask corrected by hand")
    assert main(["sample", str(tmp_path / "s"), "--n", "3", "--size", "64"]) == 2
    assert "synth_000_0000.png exists" in capsys.readouterr().err
    assert mask.read_bytes() == b"a mask corrected by hand"
    assert len(list((tmp_path / "s" / "images").iterdir())) == 1  # nothing written
    assert main(["sample", str(tmp_path / "s"), "--n", "2", "--size", "64", "--seed", "1"]) == 0


def test_measure_command_and_segment_measure(tmp_path, inputs, tiny_model_path, capsys):
    images, masks = inputs
    out = tmp_path / "m.csv"
    assert main(["measure", str(images), str(masks), "--out", str(out), "--pixel-size-mm", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "measured 6 lesions" in text and "not a diagnosis" in text
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,") and len(lines) == 7  # a plain table: header + one row each
    header = lines[0].split(",")
    first = dict(zip(header, lines[1].split(",")))
    assert float(first["area_mm2"]) == pytest.approx(float(first["area_px"]) * 0.0025, rel=1e-4)
    assert int(first["n_colours"]) >= 1
    assert main(["measure", str(images), str(masks), "--out", str(out)]) == 2  # no overwrite
    results = tmp_path / "R"
    assert main(["segment", str(images), str(results), "--model", str(tiny_model_path), "--measure"]) == 0
    assert len((results / "measurements.csv").read_text().splitlines()) == 7


def test_out_of_memory_is_explained(tmp_path, inputs, monkeypatch, capsys):
    import napari_skinseg.training as training

    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield  # a generator, like the real one

    monkeypatch.setattr(training, "train", oom)
    images, masks = inputs
    assert main(["train", str(images), str(masks), "--out", str(tmp_path / "m.pt"), "--size", "64"]) == 2
    assert "out of memory; lower --batch-size or --size" in capsys.readouterr().err
