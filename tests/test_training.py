import numpy as np
import pytest

from napari_skinseg.dataset import samples_from_arrays, samples_from_folders
from napari_skinseg.model import ModelFileError, load_model
from napari_skinseg.training import (
    checkpoint_path,
    run_training,
    split_indices,
    split_note,
    train,
)


def test_split_is_four_to_one_seeded_and_never_empty():
    tr, va = split_indices(100, 0.2, seed=0)
    assert len(tr) == 80 and len(va) == 20 and not set(tr) & set(va)
    assert split_indices(100, 0.2, seed=0) == (tr, va) != split_indices(100, 0.2, seed=1)
    assert [len(s) for s in split_indices(2, 0.2, 0)] == [1, 1]
    assert [len(s) for s in split_indices(3, 0.9, 0)] == [1, 2]
    with pytest.raises(ValueError, match="at least 2"):
        split_indices(1, 0.2, 0)



def test_pairs_accepted_unseen_are_never_validation_pairs():
    # A model scored on its own accepted masks looked better than any retrained model, so
    # retraining after "Accept the rest" was (almost) never adopted.
    flags = [i % 3 != 0 for i in range(30)]  # 10 reviewed pairs, 20 accepted unseen
    tr, va = split_indices(30, 0.2, seed=0, train_only=flags)
    assert len(va) == 6 and not any(flags[i] for i in va) and sorted(tr + va) == list(range(30))
    tr, va = split_indices(30, 0.5, seed=0, train_only=flags)
    assert len(va) == 10 and len(tr) == 20  # validation takes what is reviewed
    # nothing flagged (or everything): the split it has always been
    assert split_indices(30, 0.2, 0, [False] * 30) == split_indices(30, 0.2, 0)
    assert split_indices(30, 0.2, 0, [True] * 30) == split_indices(30, 0.2, 0)
    assert "never used for validation" in split_note(30, 20)
    assert "favour the model that made them" in split_note(30, 30) and split_note(30, 0) is None

def test_one_epoch_yields_a_report_and_writes_the_model(tmp_path, tiny_samples, tiny_config):
    gen = train(tiny_samples, tiny_config, tmp_path / "m.pt")
    report = next(gen)
    assert report.epoch == 1 and report.epochs == 1 and report.best
    for value in (report.train_loss, report.val_loss):
        assert 0 < value < 5
    for value in (report.train_accuracy, report.val_accuracy, report.val_dice, report.val_jaccard):
        assert 0 <= value <= 1
    with pytest.raises(StopIteration) as done:
        next(gen)
    result = done.value.value
    assert not result.cancelled and result.best_epoch == 1 and len(result.val_names) == 3
    meta = load_model(tmp_path / "m.pt").metadata
    assert meta.status == "complete" and meta.config == tiny_config
    assert meta.history[0]["val_dice"] == report.val_dice and meta.data["n_train"] == 13
    assert not checkpoint_path(tmp_path / "m.pt").exists()


def test_training_learns_and_is_reproducible(tmp_path, tiny_samples, tiny_config):
    config = tiny_config.replace(epochs=3, learning_rate=3e-3)
    a = run_training(tiny_samples, config, tmp_path / "a.pt")
    b = run_training(tiny_samples, config, tmp_path / "b.pt")
    assert [h.as_dict() | {"seconds": 0} for h in a.history] == \
           [h.as_dict() | {"seconds": 0} for h in b.history]
    assert a.history[-1].train_loss < a.history[0].train_loss


def test_cancel_between_batches_leaves_a_usable_model(tmp_path, tiny_samples, tiny_config):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1  # cancel after the first batch

    result = run_training(tiny_samples, tiny_config.replace(batch_size=2, epochs=3),
                          tmp_path / "c.pt", cancel=cancel)
    assert result.cancelled and result.history == []
    model = load_model(tmp_path / "c.pt")
    assert model.metadata.status == "cancelled"


def test_resume_continues_exactly_where_it_stopped(tmp_path, tiny_samples, tiny_config):
    config = tiny_config.replace(epochs=2)
    full = run_training(tiny_samples, config, tmp_path / "full.pt")
    gen = train(tiny_samples, config, tmp_path / "part.pt")
    first = next(gen)
    gen.close()  # the session ends after epoch 1
    assert checkpoint_path(tmp_path / "part.pt").exists()
    resumed = run_training(tiny_samples, config, tmp_path / "part.pt", resume=True)
    assert resumed.history[0].as_dict() == first.as_dict()
    assert resumed.history[1].val_loss == pytest.approx(full.history[1].val_loss, rel=1e-5)
    # a checkpoint damaged outside the program: the message says how to go on
    gen = train(tiny_samples, config, tmp_path / "cut.pt")
    next(gen)
    gen.close()
    ckpt = checkpoint_path(tmp_path / "cut.pt")
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(ModelFileError, match="delete cut.pt.checkpoint.pt to start again"):
        next(train(tiny_samples, config, tmp_path / "cut.pt", resume=True))
    # the message names what differs (it printed the whole saved config, leaving the diff to
    # the reader)
    with pytest.raises(ValueError, match=r"other settings \(learning_rate 0.5 there, 0.1 now\)"):
        gen = train(tiny_samples, config.replace(learning_rate=0.5), tmp_path / "x.pt")
        next(gen)
        gen.close()
        next(train(tiny_samples, config.replace(learning_rate=0.1), tmp_path / "x.pt", resume=True))


def test_fine_tuning_starts_from_a_model_file(tmp_path, tiny_samples, tiny_config, tiny_model_path):
    other = tiny_config.replace(decoder_channels=(64, 32, 16, 8, 8))
    result = run_training(tiny_samples, other, tmp_path / "ft.pt", init=tiny_model_path)
    meta = result.model.metadata
    assert meta.started_from == str(tiny_model_path)
    assert meta.config.decoder_channels == (32, 16, 16, 8, 8)  # the base model's architecture


def test_bad_training_data(tmp_path, tiny_config):
    img = np.zeros((32, 32, 3), np.uint8)
    empty = samples_from_arrays([img, img, img], [np.zeros((32, 32), int)] * 3, size=64)
    with pytest.raises(ValueError, match="no lesion pixels"):
        next(train(empty, tiny_config, tmp_path / "m.pt"))
    with pytest.raises(ValueError, match="image is 32x32 but its labels are"):
        samples_from_arrays([img], [np.zeros((16, 32), int)], size=64)


def test_folder_data_reports_bad_pairs(tmp_path, synthetic_folder):
    import shutil

    images, masks = (shutil.copytree(p, tmp_path / p.name) for p in synthetic_folder)
    first = sorted(images.iterdir())[0]
    first.write_bytes(first.read_bytes()[:100])  # truncated
    (images / "orphan.png").write_bytes(sorted(images.iterdir())[1].read_bytes())
    samples = samples_from_folders(images, masks, size=64)
    assert len(samples) == 5
    reasons = " | ".join(str(s) for s in samples.skipped)
    assert "orphan.png: no mask" in reasons and f"{first.name}: not a readable image" in reasons


# Class 4: training that cannot succeed stops early and clearly.

TINY_TRAIN = ["--size", "64", "--batch-size", "3", "--decoder-channels", "32,16,16,8,8",
              "--device", "cpu", "--epochs", "1"]


def test_non_finite_loss_stops_training_and_no_such_model_is_complete(tmp_path, tiny_samples,
                                                                      tiny_config, monkeypatch):
    import napari_skinseg.training as training
    from napari_skinseg.training import TrainingDiverged

    real_forward = training._Loss.forward
    calls = []

    def explodes_in_epoch_two(self, logits, target):
        calls.append(1)
        loss = real_forward(self, logits, target)
        return loss * float("nan") if len(calls) > 5 else loss  # epoch 1: 4 batches + validation

    monkeypatch.setattr(training._Loss, "forward", explodes_in_epoch_two)
    with pytest.raises(TrainingDiverged, match="not a finite number.*lower the learning rate"):
        run_training(tiny_samples, tiny_config.replace(epochs=3), tmp_path / "d.pt")
    meta = load_model(tmp_path / "d.pt").metadata
    assert meta.status == "diverged" and meta.best_epoch == 1  # the good epoch, marked
    calls.clear()
    calls.extend([1] * 10)  # diverges at once: nothing is saved at all
    with pytest.raises(TrainingDiverged, match="no model was saved"):
        run_training(tiny_samples, tiny_config, tmp_path / "e.pt")
    assert not (tmp_path / "e.pt").exists()


def test_models_with_non_finite_weights_are_never_saved_or_used(tmp_path, tiny_config, synthetic_folder,
                                                               capsys):
    import torch

    from napari_skinseg.cli import main
    from napari_skinseg.model import ModelFileError, SkinSegModel

    model = SkinSegModel.new(tiny_config)
    path = model.save(tmp_path / "ok.pt")
    with torch.no_grad():
        next(model.network.parameters()).fill_(float("inf"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.save(tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    payload = torch.load(path, weights_only=True)
    first = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][first] = payload["state_dict"][first] * float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(ModelFileError, match="NaN or infinite values"):
        load_model(tmp_path / "nan.pt")
    assert main(["segment", str(synthetic_folder[0]), str(tmp_path / "R"), "--model",
                 str(tmp_path / "nan.pt")]) == 2
    assert "diverged" in capsys.readouterr().err and not (tmp_path / "R").exists()


@pytest.mark.parametrize("option,match", [
    (["--lr", "inf"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "0"], "--lr"),
    (["--limit", "0"], "--limit"), (["--val-fraction", "1"], "--val-fraction"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--size", "100"], "--size")])
def test_impossible_settings_are_refused_at_parse_time(tmp_path, synthetic_folder, option, match, capsys):
    from napari_skinseg.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", *map(str, synthetic_folder), "--out", str(tmp_path / "m.pt"), *option])
    assert exit_.value.code == 2 and match in capsys.readouterr().err
    with pytest.raises(ValueError, match="finite"):
        from napari_skinseg.config import TrainConfig

        TrainConfig(learning_rate=float("inf"))


@pytest.mark.parametrize("option,message", [
    (["--encoder", "resnet19"], "unknown encoder 'resnet19'; did you mean resnet18"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--init", "missing.pt"], "does not exist"),
    # numpy and torch refuse these seeds only after the data were read ("expected non-negative
    # integer", "Overflow when unpacking long long")
    (["--seed", "-5"], "seed must be a whole number from 0 to 2**64 - 1 (got -5)"),
    (["--seed", str(2 ** 64)], "seed must be a whole number from 0")])
def test_encoder_device_and_init_are_checked_before_the_data(tmp_path, synthetic_folder, option,
                                                             message, monkeypatch, capsys):
    import napari_skinseg.pairs as pairs
    from napari_skinseg.cli import main

    def forbidden(*args, **kwargs):
        raise AssertionError("training data read before the settings were checked")

    monkeypatch.setattr(pairs, "find_pairs", forbidden)
    assert main(["train", *map(str, synthetic_folder), "--out", str(tmp_path / "m.pt"), *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_printed_split_is_the_real_one_and_ctrl_c_exits_130(tmp_path, synthetic_folder, monkeypatch,
                                                            capsys):
    import os
    import signal

    import napari_skinseg.training as training
    from napari_skinseg.cli import main

    real_augment = training.augment_batch
    calls = []

    def press_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # during the second batch of the second epoch
            os.kill(os.getpid(), signal.SIGINT)
        return real_augment(*args, **kwargs)

    # what the caller had (Python's default, or "ignored" in a job started in the background)
    handler_before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "m.pt"
    images, masks = map(str, synthetic_folder)
    assert main(["train", images, masks, "--out", str(out), *TINY_TRAIN, "--limit", "5",
                 "--val-fraction", "0.5", "--batch-size", "2"]) == 0
    text = capsys.readouterr().out
    assert "5 pairs, 3:2 split" in text  # round(2.5) pairs held out, the rest trained on
    assert load_model(out).metadata.data["n_train"] == 3
    monkeypatch.setattr(training, "augment_batch", press_ctrl_c)
    out2 = tmp_path / "c.pt"
    assert main(["train", images, masks, "--out", str(out2), *TINY_TRAIN[:-2], "--epochs", "3",
                 "--batch-size", "2"]) == 130
    captured = capsys.readouterr()
    assert "cancelled; best model so far" in captured.out and "--resume" in captured.err
    assert load_model(out2).metadata.status == "cancelled"
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored for the caller


def test_all_lesion_masks_are_refused_like_empty_ones(tmp_path, tiny_config):
    img = np.zeros((32, 32, 3), np.uint8)
    full = samples_from_arrays([img, img, img], [np.ones((32, 32), int)] * 3, size=64)
    with pytest.raises(ValueError, match="every pixel of every training mask is lesion"):
        next(train(full, tiny_config, tmp_path / "m.pt"))


def test_ctrl_c_in_the_first_epoch_can_be_resumed_as_it_says(tmp_path, synthetic_folder,
                                                              monkeypatch, capsys):
    # Cancelled before the first checkpoint: the run says "--resume", which must then start
    # again (replacing its own epoch-less model), not refuse because the model exists.
    import os
    import signal

    import napari_skinseg.training as training
    from napari_skinseg.cli import main

    real_augment = training.augment_batch

    def press_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_augment(*args, **kwargs)

    out = tmp_path / "m.pt"
    command = ["train", *map(str, synthetic_folder), "--out", str(out), *TINY_TRAIN,
               "--batch-size", "2"]
    monkeypatch.setattr(training, "augment_batch", press_ctrl_c)
    assert main(command) == 130
    assert "--resume" in capsys.readouterr().err
    assert load_model(out).metadata.status == "cancelled"
    assert not checkpoint_path(out).exists()
    monkeypatch.setattr(training, "augment_batch", real_augment)
    assert main(command + ["--resume"]) == 0
    assert "unfinished model of an interrupted run" in capsys.readouterr().out
    assert load_model(out).metadata.status == "complete"


def test_a_click_to_fix_model_is_refused_as_a_starting_model(tmp_path, synthetic_folder,
                                                             tiny_model_path, tiny_samples,
                                                             tiny_config, monkeypatch, capsys):
    """--init with a click-to-fix model (6 input channels) ended in torch's RuntimeError
    traceback at the first batch, after the data were read."""
    import napari_skinseg.pairs as pairs
    from napari_skinseg.cli import main
    from napari_skinseg.click_model import make_click_model
    from napari_skinseg.model import ModelFileError

    click = make_click_model(load_model(tiny_model_path)).save(tmp_path / "click.pt")
    with pytest.raises(ModelFileError, match="click-to-fix model"):
        next(train(tiny_samples, tiny_config, tmp_path / "a.pt", init=click))

    def forbidden(*args, **kwargs):
        raise AssertionError("training data read before the starting model was checked")

    monkeypatch.setattr(pairs, "find_pairs", forbidden)
    assert main(["train", *map(str, synthetic_folder), "--out", str(tmp_path / "m.pt"),
                 *TINY_TRAIN, "--init", str(click)]) == 2
    err = capsys.readouterr().err
    assert "click.pt is a click-to-fix model" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_size_32_never_trains_on_a_batch_of_one_image(tmp_path, tiny_samples, tiny_config):
    """At size 32 the deepest features are 1x1: a last batch of one image (13 training pairs in
    batches of 2) stopped training with torch's "Expected more than 1 value per channel"."""
    config = tiny_config.replace(size=32, batch_size=2)
    samples = samples_from_arrays(list(tiny_samples.images), list(tiny_samples.masks), size=32)
    result = run_training(samples, config, tmp_path / "m.pt")
    assert result.history[0].epoch == 1 and not result.cancelled
    assert load_model(tmp_path / "m.pt").metadata.data["n_train"] == 13
    with pytest.raises(ValueError, match="batch of one image"):
        next(train(samples, config.replace(batch_size=1), tmp_path / "b.pt"))
    assert not (tmp_path / "b.pt").exists()
