import numpy as np
import pytest

from napari_skinseg.image_io import write_image, write_mask
from napari_skinseg.pairs import PairFolder, find_pairs, list_images, unique_ids, unreviewed_ids


def _img(path):
    write_image(path, np.zeros((16, 16, 3), np.uint8))


def test_isic_and_same_stem_naming_and_missing_masks(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _img(images / "ISIC_A.jpg")
    _img(images / "b.png")
    _img(images / "c.png")
    (images / "readme.txt").write_text("not an image")
    write_mask(masks / "ISIC_A_segmentation.png", np.zeros((16, 16), bool))
    write_mask(masks / "b.png", np.zeros((16, 16), bool))
    scan = find_pairs(images, masks)
    assert [(p.image.name, p.mask.name) for p in scan.pairs] == [
        ("ISIC_A.jpg", "ISIC_A_segmentation.png"), ("b.png", "b.png")]
    reasons = {s.path.name: s.reason for s in scan.skipped}
    assert reasons["readme.txt"] == "not an image file"
    assert "no mask named c_segmentation.png" in reasons["c.png"]


def test_masks_with_an_upper_case_extension_are_found(tmp_path):
    # Images are accepted as .PNG/.JPG; their masks were "not found" under the very name shown.
    images, masks = tmp_path / "images", tmp_path / "masks"
    _img(images / "a.JPG")
    _img(images / "b.png")
    write_mask(masks / "a_segmentation.PNG", np.zeros((16, 16), bool))
    write_mask(masks / "b.TIF", np.zeros((16, 16), bool))
    scan = find_pairs(images, masks)
    assert [(p.image.name, p.mask.name) for p in scan.pairs] == [
        ("a.JPG", "a_segmentation.PNG"), ("b.png", "b.TIF")]
    assert scan.skipped == []


def test_images_and_masks_in_one_folder(tmp_path):
    _img(tmp_path / "x.jpg")
    write_mask(tmp_path / "x_segmentation.png", np.zeros((16, 16), bool))
    scan = find_pairs(tmp_path, tmp_path)
    assert [(p.image.name, p.mask.name) for p in scan.pairs] == [("x.jpg", "x_segmentation.png")]


def test_a_pair_folder_with_other_sub_folder_names_says_what_it_needs(tmp_path):
    # `skinseg train PAIR_DIR` with PAIR_DIR/images + PAIR_DIR/labels said only "the folder
    # holds no images"
    from napari_skinseg.pairs import pair_folders

    _img(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "labels" / "a_segmentation.png", np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="a pair folder holds images/ and masks/, this one "
                                         "images/, labels/"):
        find_pairs(*pair_folders(tmp_path))


def test_empty_and_missing_folders_raise(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image/mask pairs.*holds no images"):
        find_pairs(tmp_path / "empty", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")


def test_subfolders_are_not_read(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "Results" / "a_segmentation.png")
    images, _ = list_images(tmp_path)
    assert [p.name for p in images] == ["a.png"]


def test_images_with_the_same_id_are_not_both_paired(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _img(images / "a.jpg")
    _img(images / "a.png")
    write_mask(masks / "a_segmentation.png", np.zeros((16, 16), bool))
    scan = find_pairs(images, masks)
    assert [(p.image.name, p.mask.name) for p in scan.pairs] == [("a.jpg", "a_segmentation.png")]
    assert [(s.path.name, "same name as a.jpg" in s.reason) for s in scan.skipped] == [("a.png", True)]


def test_unique_ids_never_give_a_repeat_the_name_of_another_id():
    assert unique_ids(["a", "a", "a_1"]) == ["a", "a_2", "a_1"]
    assert unique_ids(["a", "a", "a_2", "a"]) == ["a", "a_3", "a_2", "a_4"]
    assert unique_ids(["b", "B"]) == ["b", "B_2"]  # one file on macOS and Windows
    assert unique_ids(["x", "y"]) == ["x", "y"]


def test_pairs_accepted_unseen_are_listed_until_a_person_saves_them(tmp_path):
    folder = PairFolder(tmp_path / "curated")
    image, mask = np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=bool)
    folder.write("seen", image, mask)
    assert not folder.unreviewed_path.exists()  # nothing accepted: no list at all
    folder.write("a", image, mask, reviewed=False)
    folder.write("b", image, mask, reviewed=False)
    assert unreviewed_ids(folder.images, folder.masks) == {"a", "b"}
    folder.write("a", image, ~mask, overwrite=True)  # corrected (or just looked at) and saved
    assert folder.unreviewed_ids() == {"b"} and folder.ids() == {"seen", "a", "b"}
    # only a pair folder keeps the list; a damaged list counts every pair as reviewed
    assert unreviewed_ids(folder.images, tmp_path / "elsewhere") == set()
    folder.unreviewed_path.write_text("{not json")
    assert folder.unreviewed_ids() == set()
