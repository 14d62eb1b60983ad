import os
import warnings

import numpy as np
import pytest
from PIL import Image

from napari_skinseg.image_io import (
    ImageReadError,
    NonBinaryMaskWarning,
    labels_to_mask,
    read_image,
    read_mask,
    to_rgb_uint8,
    write_image,
    write_mask,
)


def test_rgb_uint8_is_kept():
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(to_rgb_uint8(img), img)


def test_rgba_loses_alpha_and_gray_is_replicated():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    out = to_rgb_uint8(rgba)
    assert out.shape == (16, 16, 3) and (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = to_rgb_uint8(gray)
    assert out.shape == (16, 16, 3) and (out[..., 2] == gray).all()


def test_sixteen_bit_and_float_are_rescaled():
    img16 = np.full((10, 10), 65535, np.uint16)
    img16[0, 0] = 0
    out = to_rgb_uint8(img16)
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 0
    img_f = np.full((10, 10, 3), 0.5, np.float32)
    assert to_rgb_uint8(img_f)[0, 0, 0] == 128


def test_tiny_and_odd_arrays_are_refused():
    with pytest.raises(ImageReadError, match="1x1 pixels"):
        to_rgb_uint8(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageReadError, match="shape"):
        to_rgb_uint8(np.zeros((5, 10, 10, 3), np.uint8))
    with pytest.raises(ImageReadError, match="NaN"):
        to_rgb_uint8(np.full((10, 10), np.nan))


def test_read_image_from_16bit_png_and_grayscale(tmp_path):
    Image.fromarray(np.full((12, 12), 60000, np.uint16)).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (12, 12, 3) and img.dtype == np.uint8 and img[0, 0, 0] == round(60000 / 65535 * 255)


def test_truncated_and_non_image_files_raise_clear_errors(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg: not a readable image"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ImageReadError, match="notes.png"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_mask_values_other_than_0_255_warn_and_count_as_lesion():
    mask = np.array([[0, 128], [255, 3]], np.uint8)
    with pytest.warns(NonBinaryMaskWarning, match="above 0 is taken as lesion"):
        out = labels_to_mask(mask)
    assert out.tolist() == [[False, True], [True, True]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels_to_mask(np.array([[0, 255]], np.uint8))
        labels_to_mask(np.array([[0, 1]], np.uint8))


def test_mask_of_another_size_is_refused(tmp_path):
    write_mask(tmp_path / "m.png", np.ones((10, 20), bool))
    assert read_mask(tmp_path / "m.png", shape=(10, 20)).all()
    with pytest.raises(ImageReadError, match="mask is 20x10 but its image is 30x10"):
        read_mask(tmp_path / "m.png", shape=(10, 30))


def test_write_never_overwrites_unless_asked(tmp_path):
    path = write_mask(tmp_path / "m.png", np.ones((10, 10), bool))
    with pytest.raises(FileExistsError):
        write_mask(path, np.zeros((10, 10), bool))
    assert read_mask(path).all()
    write_mask(path, np.zeros((10, 10), bool), overwrite=True)
    assert not read_mask(path).any()
    assert np.unique(np.asarray(Image.open(path))).tolist() == [0]
    write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "x.png"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any new file
