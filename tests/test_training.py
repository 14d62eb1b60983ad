import numpy as np
import pytest

from napari_skinseg.dataset import samples_from_arrays, samples_from_folders
from napari_skinseg.model import load_model
from napari_skinseg.training import checkpoint_path, run_training, split_indices, train


def test_split_is_four_to_one_seeded_and_never_empty():
    tr, va = split_indices(100, 0.2, seed=0)
    assert len(tr) == 80 and len(va) == 20 and not set(tr) & set(va)
    assert split_indices(100, 0.2, seed=0) == (tr, va) != split_indices(100, 0.2, seed=1)
    assert [len(s) for s in split_indices(2, 0.2, 0)] == [1, 1]
    assert [len(s) for s in split_indices(3, 0.9, 0)] == [1, 2]
    with pytest.raises(ValueError, match="at least 2"):
        split_indices(1, 0.2, 0)


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
    with pytest.raises(ValueError, match="other settings"):
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
