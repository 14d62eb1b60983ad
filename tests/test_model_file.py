
import pytest
import torch

from napari_skinseg.config import TrainConfig
from napari_skinseg.model import ModelFileError, SkinSegModel, load_model
from tests.conftest import TINY


@pytest.fixture
def model():
    return SkinSegModel.new(TrainConfig(**TINY))


def _out(model, x):
    with torch.inference_mode():
        return model.network.eval()(x)


def test_round_trip_keeps_weights_and_metadata(tmp_path, model):
    model.metadata.history = [{"epoch": 1, "val_dice": 0.5}]
    path = model.save(tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.metadata.config == model.metadata.config
    assert loaded.metadata.history == [{"epoch": 1, "val_dice": 0.5}]
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(_out(model, x), _out(loaded, x))


def test_half_precision_file_is_smaller_and_close(tmp_path, model):
    full = model.save(tmp_path / "full.pt")
    half = model.save(tmp_path / "half.pt", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(_out(model, x), _out(load_model(half), x), atol=1e-2)


def test_xavier_initialisation_is_seeded(model):
    other = SkinSegModel.new(TrainConfig(**TINY))
    for a, b in zip(model.network.parameters(), other.network.parameters()):
        assert torch.equal(a, b)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("content,match", [
    (b"", "not a readable"),
    (b"definitely not a model", "not a readable"),
])
def test_garbage_files(tmp_path, content, match):
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(ModelFileError, match=match):
        load_model(tmp_path / "bad.pt")


def test_truncated_foreign_and_pickled_code_files(tmp_path, model, capsys):
    path = model.save(tmp_path / "m.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pt is not a readable .* truncated"):
        load_model(tmp_path / "cut.pt")
    (tmp_path / "notes.txt").write_text("a text file, not a model\n")
    with pytest.raises(ModelFileError, match="not a PyTorch file at all") as err:
        load_model(tmp_path / "notes.txt")
    assert "weights_only" not in str(err.value)  # never advice to switch the safety check off
    # an image or a CSV given as the model was said to hold Python code
    for name, content in (("image.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
                          ("table.csv", b"id,area_px\na,12\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match="not a PyTorch file at all"):
            load_model(tmp_path / name)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not a napari-skinseg model"):
        load_model(tmp_path / "foreign.pt")
    torch.save({"format": "napari-skinseg-model", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="holds Python objects or code, which napari-skinseg "
                                             "never runs") as err:
        load_model(tmp_path / "evil.pt")
    assert "weights_only" not in str(err.value)
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_metadata_that_does_not_match_weights(tmp_path, model):
    path = model.save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["metadata"] = payload["metadata"].replace('"decoder_channels": [32, 16, 16, 8, 8]',
                                                      '"decoder_channels": [64, 32, 16, 8, 8]')
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ModelFileError, match="does not match its metadata"):
        load_model(tmp_path / "mismatch.pt")
