import os
from pathlib import Path
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


def _write_png16(path, arr):
    """A 16-bit RGB PNG (Pillow cannot write one): IHDR, one IDAT of unfiltered rows, IEND."""
    import struct
    import zlib

    h, w, _ = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_colour_pngs_are_read_or_refused_never_left_black(tmp_path):
    """Pillow keeps the high byte of 16-bit colour PNG values: right for full-range data; for
    12-bit data it would be a black image, segmented as if it were one."""
    rng = np.random.default_rng(3)
    full = rng.integers(0, 65536, (24, 32, 3)).astype(np.uint16)
    _write_png16(tmp_path / "full.png", full)
    assert (read_image(tmp_path / "full.png") == (full >> 8)).all()
    twelve = rng.integers(0, 4096, (24, 32, 3)).astype(np.uint16)
    _write_png16(tmp_path / "twelve.png", twelve)
    with pytest.raises(ImageReadError, match="twelve.png: 16-bit colour PNG .* 16-bit TIFF"):
        read_image(tmp_path / "twelve.png")


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


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_masks_are_not_swamped_by_compression_noise(tmp_path, channels):
    # find_pairs pairs <id>_segmentation.jpg; read with "> 0 is lesion", its compression noise
    # made a 20 % lesion into 90 % of the image, and training learnt from that.
    lesion = np.zeros((64, 80), bool)
    lesion[20:44, 25:60] = True
    pixels = lesion.astype(np.uint8) * 255
    if channels == 3:
        pixels = np.stack([pixels] * 3, axis=-1)
    Image.fromarray(pixels).save(tmp_path / "m_segmentation.jpg", quality=70)
    with pytest.warns(NonBinaryMaskWarning, match="JPEG mask"):
        mask = read_mask(tmp_path / "m_segmentation.jpg", shape=(64, 80))
    assert (mask != lesion).mean() < 0.01
    # exact values in a lossless file keep the documented "> 0 is lesion"
    write_image(tmp_path / "m.png", np.where(lesion, 38, 0).astype(np.uint8))
    with pytest.warns(NonBinaryMaskWarning, match="every value above 0"):
        assert np.array_equal(read_mask(tmp_path / "m.png"), lesion)


def test_transparent_mask_background_is_skin_whatever_its_colour(tmp_path):
    lesion = np.zeros((12, 12), bool)
    lesion[3:7, 2:9] = True
    index = lesion.astype(np.uint8)  # palette mask: 0 = transparent white, 1 = red
    pal = Image.fromarray(index, "P")
    pal.putpalette([255, 255, 255, 255, 0, 0])
    pal.save(tmp_path / "p.png", transparency=0)
    rgba = np.full((12, 12, 4), 255, np.uint8)
    rgba[~lesion, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    la = np.full((12, 12, 2), 255, np.uint8)
    la[~lesion, 1] = 0
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    for name in ("p.png", "rgba.png", "la.png"):
        assert np.array_equal(read_mask(tmp_path / name), lesion), name


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


# Class 5: images as users have them.

def _gradient(h=12, w=20):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.arange(w)[None, :] * 10
    rgb[..., 1] = np.arange(h)[:, None] * 20
    return rgb


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, ext):
    from PIL import ImageOps

    rgb = _gradient()
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: viewers rotate 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / f"a{ext}", exif=exif, quality=100)
    img = read_image(tmp_path / f"a{ext}")
    assert img.shape == (20, 12, 3)
    with Image.open(tmp_path / f"a{ext}") as shown:
        expected = np.asarray(ImageOps.exif_transpose(shown).convert("RGB"))
    assert np.array_equal(img, expected)
    if ext == ".png":
        assert np.array_equal(img, np.rot90(rgb, -1))
        mask = np.zeros((12, 20), np.uint8)
        mask[:, :5] = 255
        Image.fromarray(mask).save(tmp_path / "m.png", exif=exif)
        assert read_mask(tmp_path / "m.png", shape=img.shape).shape == (20, 12)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_matches_what_viewers_show(tmp_path, orientation):
    from PIL import ImageOps

    path = tmp_path / "o.tif"
    Image.fromarray(_gradient()).save(path, tiffinfo={274: orientation})
    with Image.open(path) as shown:
        expected = np.asarray(ImageOps.exif_transpose(shown))
    assert np.array_equal(read_image(path), expected)


def test_palette_and_white_is_zero_tiffs_show_their_colours(tmp_path):
    # tifffile returns stored values: a palette TIFF was read as its colour indices (a gray
    # picture of another image) and a white-is-zero TIFF inverted, masks included
    import tifffile

    rgb = _gradient()
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=32)
    palette.save(tmp_path / "palette.tif")
    assert np.array_equal(read_image(tmp_path / "palette.tif"), np.asarray(palette.convert("RGB")))
    gray = rgb[..., 1]
    tifffile.imwrite(tmp_path / "white.tif", 255 - gray, photometric="miniswhite")
    assert np.array_equal(read_image(tmp_path / "white.tif")[..., 0], gray)
    lesion = np.zeros(gray.shape, bool)
    lesion[5:15, 5:25] = True
    tifffile.imwrite(tmp_path / "mask.tif", ~lesion, photometric="miniswhite")  # bilevel, fax-style
    assert np.array_equal(read_mask(tmp_path / "mask.tif"), lesion)


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB"])
def test_tiffs_in_other_colour_spaces_are_read_as_rgb(tmp_path, mode):
    # tifffile returned the stored CMYK / YCbCr / Lab values, which were taken as RGB(A)
    rgb = np.asarray(Image.fromarray(_gradient(40, 60)).resize((60, 40)))
    Image.fromarray(rgb).convert(mode).save(tmp_path / "c.tif")
    with Image.open(tmp_path / "c.tif") as shown:
        expected = np.asarray(shown.convert("RGB"))
    assert np.abs(read_image(tmp_path / "c.tif").astype(int) - expected).max() <= 1


def test_float_and_twelve_bit_tiffs_are_images(tmp_path):
    import tifffile

    from napari_skinseg.image_io import ImageScalingWarning

    rgb = _gradient().astype(np.float32)
    tifffile.imwrite(tmp_path / "unit.tif", rgb / 255.0, photometric="rgb")  # float RGB: Pillow cannot open it
    assert np.abs(read_image(tmp_path / "unit.tif").astype(int) - rgb).max() <= 1
    tifffile.imwrite(tmp_path / "wide.tif", rgb * 4.0 - 100, photometric="rgb")
    with pytest.warns(ImageScalingWarning, match="rescaled from its own range"):
        wide = read_image(tmp_path / "wide.tif")
    assert wide.min() == 0 and wide.max() == 255
    twelve = (_gradient().astype(np.uint16) * 16 + 5)  # 12-bit camera data in a 16-bit file
    tifffile.imwrite(tmp_path / "twelve.tif", twelve, photometric="rgb")  # Pillow reads this as 8-bit, too dark
    with pytest.warns(ImageScalingWarning, match="read as 12-bit data \\(scaled by 4095\\)"):
        img = read_image(tmp_path / "twelve.tif")
    assert np.abs(img.astype(int) - np.rint(twelve / 4095 * 255)).max() <= 1
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(twelve, -1, 0), photometric="rgb",
                     planarconfig="separate")
    with pytest.warns(ImageScalingWarning):
        assert np.array_equal(read_image(tmp_path / "planar.tif"), img)
    Image.fromarray((_gradient()[..., 0].astype(np.uint16) * 16)).save(tmp_path / "g12.png")
    with pytest.warns(ImageScalingWarning, match="12-bit"):
        assert read_image(tmp_path / "g12.png").max() == round(190 * 16 / 4095 * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full-range 16-bit data need no word
        to_rgb_uint8(np.array([[0, 65535]] * 8 + [[1, 2]], np.uint16).repeat(4, axis=1))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_tiffs_above_the_decompression_bomb_limit_are_refused(tmp_path, monkeypatch, dtype):
    import tifffile

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # so a 16 x 16 image is "too large"
    for ext in (".tif", ".png"):
        path = tmp_path / f"big{ext}"
        data = np.zeros((16, 16), dtype)
        if ext == ".tif":
            tifffile.imwrite(path, data, compression="zlib")
        else:  # Pillow's own refusal, for comparison
            Image.fromarray(data.astype(np.uint8)).save(path)
        with pytest.raises(ImageReadError, match=f"big{ext}: image is too large to read safely"):
            read_image(path)


def test_other_pillow_formats_are_images(tmp_path):
    from napari_skinseg.pairs import list_images

    rgb = _gradient()
    for ext in (".webp", ".gif", ".ppm"):
        Image.fromarray(rgb).save(tmp_path / f"x{ext}", lossless=True)
    images, skipped = list_images(tmp_path)
    assert sorted(p.suffix for p in images) == [".gif", ".ppm", ".webp"] and skipped == []
    for path in images:
        assert read_image(path).shape == (12, 20, 3)


def test_measuring_a_large_lesion_needs_bounded_memory():
    import tracemalloc

    from skimage import draw

    from napari_skinseg.measurements import measure_lesion

    shape = (2000, 3000)
    mask = np.zeros(shape, bool)
    mask[draw.ellipse(1000, 1500, 900, 1350, shape=shape)] = True
    image = np.zeros((*shape, 3), np.uint8)
    image[..., 0] = 150
    image[:1000] = (60, 30, 20)
    tracemalloc.start()
    try:
        row = measure_lesion(mask, image, 0.02)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the image and mask are 24 MB; before, colour alone took ~1.7 GB here (6.6 GB at 6000x4000)
    assert peak < 250e6, f"{peak / 1e6:.0f} MB"
    assert row["area_px"] == mask.sum() and row["n_colours"] == 2
    assert row["asymmetry_major_axis"] < 0.02 and row["solidity"] > 0.99


def test_a_file_given_for_a_folder_says_so(tmp_path, capsys):
    from napari_skinseg.cli import main

    Image.fromarray(_gradient()).save(tmp_path / "photo.png")
    assert main(["segment", str(tmp_path / "photo.png"), str(tmp_path / "R")]) == 2
    assert "photo.png is a file, not a folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(tmp_path / "photo.png")]) == 2
    assert "photo.png is a file, not a folder" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "photo.png"), str(tmp_path), "--out",
                 str(tmp_path / "m.csv")]) == 2
    assert "photo.png is a file, not a folder" in capsys.readouterr().err


def test_a_non_utf8_terminal_never_turns_success_into_an_error(tmp_path, monkeypatch):
    import io
    import sys

    from napari_skinseg.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["sample", str(tmp_path / "Läsionen→"), "--n", "1", "--size", "64"]) == 0
    out.flush()
    assert b"L\\xe4sionen\\u2192" in out.buffer.getvalue()
    assert out.errors == "strict"  # the stream's own setting is back


def _zlib_level_class(png: Path) -> int:
    """The FLEVEL bits of the first IDAT chunk's zlib header: 0 fastest ... 2 default."""
    data = png.read_bytes()
    at = data.index(b"IDAT") + 4
    return data[at + 1] >> 6


def test_folder_runs_write_overlays_fast_and_lossless(tmp_path, tiny_model_path):
    from napari_skinseg.folder_segmentation import overlay_outline, segment_folder
    from napari_skinseg.generators import drain
    from napari_skinseg.prediction import Segmenter
    from napari_skinseg.synthetic import write_synthetic_dataset

    images, _ = write_synthetic_dataset(tmp_path / "d", 1, (96, 80), seed=4)
    drain(segment_folder(images, tmp_path / "R", Segmenter.from_file(tiny_model_path, "cpu"),
                         overlay=True, probabilities=True))
    (image_path,) = sorted(Path(images).iterdir())
    stem = image_path.stem
    overlay = tmp_path / "R" / f"{stem}_overlay.png"
    mask = read_mask(tmp_path / "R" / f"{stem}_segmentation.png")
    expected = overlay_outline(read_image(image_path), mask)
    np.testing.assert_array_equal(read_image(overlay), expected)  # lossless
    assert _zlib_level_class(overlay) == 0  # written with a fast zlib level
    assert _zlib_level_class(tmp_path / "R" / f"{stem}_probability.png") == 0
    assert _zlib_level_class(tmp_path / "R" / f"{stem}_segmentation.png") == 2  # masks: default
