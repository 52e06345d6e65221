"""io/formats.find_images: the one folder scanner (batch, the training recipes, focusq train)."""
from pathlib import Path

from napari_focusq.io.formats import IMAGE_SUFFIXES, find_images


def _touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _dicom(p: Path) -> Path:
    return _touch(p, b"\0" * 128 + b"DICM" + b"\0" * 16)


def test_lists_images_of_every_known_type_and_nothing_else(tmp_path):
    for s in sorted(IMAGE_SUFFIXES):
        _touch(tmp_path / f"a{s}")
    _touch(tmp_path / "B.SVS")  # suffixes compare case-insensitively
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden.tif")  # a hidden file (macOS ._ files too) is not an image
    _touch(tmp_path / "sub" / "deep.tif")
    names = [p.name for p in find_images(tmp_path)]
    assert names == sorted(["B.SVS"] + [f"a{s}" for s in IMAGE_SUFFIXES])
    deep = find_images(tmp_path, recursive=True)
    assert tmp_path / "sub" / "deep.tif" in deep and len(deep) == len(names) + 1


def test_a_dicom_slide_folder_is_one_image(tmp_path):
    slide = tmp_path / "run" / "slide1"
    for i in range(3):
        _dicom(slide / f"level{i}.dcm")
    _touch(tmp_path / "run" / "other.svs")
    assert find_images(slide) == [slide]
    assert find_images(tmp_path, recursive=True) == [tmp_path / "run" / "other.svs", slide]
