"""Which files focusq reads and how: the suffix lists, open_image and the choice of backend.

TIFF-based files (TIFF, BigTIFF, OME-TIFF, Aperio SVS, Hamamatsu NDPI) go to tifffile
(:mod:`napari_focusq.io.tiff`); vendor layouts and MRXS/VMS to OpenSlide; DICOM WSI to
wsidicom; CZI and VSI to their readers. PNG and JPEG files are small by nature and are
loaded whole with Pillow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_focusq.errors import ImageReadError
from napari_focusq.io.source import ImageSource
from napari_focusq.io.tiff import _open_tiff

__all__ = ["open_image", "sample_slide_path", "find_images", "is_image_file", "SUPPORTED_FORMATS", "IMAGE_SUFFIXES",
           "READER_SUFFIXES"]

#: Suffixes of files only OpenSlide reads here (MIRAX, Hamamatsu VMS/VMU).
OPENSLIDE_SUFFIXES = {".mrxs", ".vms", ".vmu"}
#: TIFF layouts (OpenSlide's vendor names) that tifffile reads but OpenSlide stitches right:
#: Philips TIFF (sparse tiles), Leica SCN (several regions), Ventana BIF (overlapping tiles).
OPENSLIDE_TIFF_VENDORS = {"philips", "leica", "ventana"}
SUPPORTED_FORMATS = ("TIFF, BigTIFF, OME-TIFF, SVS, NDPI, PNG, JPEG, DICOM WSI, CZI, and through "
                     "OpenSlide MRXS, SCN, BIF, VMS/VMU and Philips TIFF, and VSI through slideio")
#: Olympus/Evident cellSens VSI, read through slideio
SLIDEIO_SUFFIXES = {".vsi"}
TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf2", ".tf8", ".scn", ".bif", ".qptiff"}
PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg"}
CZI_SUFFIXES = {".czi"}
#: DICOM files: a folder holding them is one slide (its levels), never one input per file.
DICOM_SUFFIXES = {".dcm"}

# ---- the one list of file types: every other list of suffixes in the package derives from these
#: Files one of which is one image (a folder scan yields these; DICOM files are a folder's).
IMAGE_SUFFIXES = frozenset(TIFF_SUFFIXES | PILLOW_SUFFIXES | OPENSLIDE_SUFFIXES | SLIDEIO_SUFFIXES | CZI_SUFFIXES)
#: Double suffixes an output's stem loses whole (``slide.ome.tif`` -> ``slide``).
MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".ome.btf", ".ome.tf2", ".ome.tf8")
#: What the napari reader is offered (napari.yaml's filename_patterns, a test checks): the
#: slide formats and DICOM, not PNG/JPEG (napari's own reader opens those); the OME ones are
#: listed too so that napari names the plugin for them when several readers match.
READER_SUFFIXES = tuple(sorted((IMAGE_SUFFIXES - PILLOW_SUFFIXES) | DICOM_SUFFIXES)) + (".ome.tif", ".ome.tiff")


def is_image_file(path) -> bool:
    """A visible file whose suffix is one of :data:`IMAGE_SUFFIXES`."""
    p = Path(path)
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def find_images(folder, *, recursive: bool = False) -> list[Path]:
    """The images in ``folder`` (sorted; hidden files skipped), the one folder scanner.

    A folder holding a DICOM slide's ``.dcm`` files is one image (the folder itself): given
    as ``folder``, the result is ``[folder]``; met while ``recursive``, it is listed in place
    of its files.
    """
    from napari_focusq.io.dicom import is_dicom_folder

    folder = Path(folder)
    if is_dicom_folder(folder):
        return [folder]
    found, dicom_dirs = [], set()
    for f in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if is_image_file(f):
            found.append(f)
        elif recursive and f.is_file() and f.suffix.lower() in DICOM_SUFFIXES and f.parent not in dicom_dirs \
                and is_dicom_folder(f.parent):
            dicom_dirs.add(f.parent)
            found.append(f.parent)
    return found


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def sample_slide_path() -> Path:
    """Path of the bundled sample slide (CMU-1-Small-Region.svs, CC0, OpenSlide test data)."""
    from importlib.resources import files

    p = Path(str(files("napari_focusq") / "data" / "CMU-1-Small-Region.svs"))
    if not p.is_file():
        raise FileNotFoundError(f"{p}: the bundled sample slide is missing from the installation")
    return p


# ----------------------------------------------------------------------------------------
def open_image(path: str | Path, *, pixel_size_um: float | None = None) -> ImageSource:
    """Open a slide, z-stack or image lazily.

    Parameters
    ----------
    path
        TIFF/BigTIFF, OME-TIFF, Aperio SVS, Hamamatsu NDPI, PNG or JPEG.
    pixel_size_um
        Level-0 pixel size in µm; overrides the file's metadata (source "user").

    Returns
    -------
    ImageSource

    Raises
    ------
    ImageReadError
        The file is missing, empty, not a supported format, truncated or corrupt, or has
        axes that cannot be read as (Z,) Y, X (, C).
    """
    if pixel_size_um is not None and not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number of µm; got {pixel_size_um!r}")
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise ImageReadError(path, "a symbolic link that leads nowhere (broken, or a loop)")
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        from napari_focusq.io.dicom import is_dicom_folder

        if not is_dicom_folder(path):
            raise ImageReadError(path, "is a directory, not an image file (a folder is read only "
                                       "when it holds the .dcm files of one DICOM slide)")
        src = _open_dicom(path)
    else:
        src = _open_file(path)
    if pixel_size_um is not None:
        src.pixel_size_um, src.pixel_size_source = float(pixel_size_um), "user"
    return src


def _open_file(path: Path) -> ImageSource:
    """Pick the backend by what the file is (its first bytes), then by its suffix."""
    if not path.is_file():  # opening a FIFO would wait for a writer forever
        raise ImageReadError(path, "is not a regular file (a FIFO, socket or device); focusq reads image files")
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc.strerror or exc})") from exc
    if not head:
        raise ImageReadError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in SLIDEIO_SUFFIXES:  # a VSI is a TIFF holding only the overview; the scan is in .ets files
        from napari_focusq.io.slideio import open_slideio

        return open_slideio(path)
    if head[:4] in _TIFF_MAGIC:
        return _open_tiff_family(path)
    if head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC):
        return _open_pillow(path)
    if head[128:132] == b"DICM":
        return _open_dicom(path)
    if head.startswith(b"ZISRAWFILE"):
        from napari_focusq.io.czi import open_czi

        return open_czi(path)
    if suffix in OPENSLIDE_SUFFIXES:
        from napari_focusq.io.openslide import open_openslide

        return open_openslide(path)
    if suffix in TIFF_SUFFIXES | PILLOW_SUFFIXES | CZI_SUFFIXES | DICOM_SUFFIXES:
        kind = {".czi": "CZI", ".dcm": "DICOM"}.get(suffix, "TIFF" if suffix in TIFF_SUFFIXES
                                                       else suffix[1:].upper())
        raise ImageReadError(path, f"not a valid {kind} file (it starts with bytes {head[:4]!r})")
    raise ImageReadError(path, f"unsupported format {suffix or '(no extension)'!r}: focusq reads "
                               f"{SUPPORTED_FORMATS}; convert other slide formats to OME-TIFF "
                               "(e.g. with QuPath or bfconvert)")


def _open_tiff_family(path: Path) -> ImageSource:
    """tifffile (the fast path) unless the TIFF is a vendor layout only OpenSlide stitches right."""
    vendor = _openslide_vendor(path)
    if vendor in OPENSLIDE_TIFF_VENDORS:
        from napari_focusq.io.openslide import open_openslide

        return open_openslide(path)
    return _open_tiff(path)


def _openslide_vendor(path: Path) -> str | None:
    """OpenSlide's name for a TIFF's layout ("philips", "leica", ...), None without OpenSlide."""
    try:
        import openslide
    except ImportError:  # also a broken openslide-bin: tifffile still reads the file
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # a TIFF OpenSlide cannot parse: leave it to tifffile's diagnostics
        return None


def _open_dicom(path: Path) -> ImageSource:
    """wsidicom for DICOM WSI; OpenSlide when only that is installed."""
    from napari_focusq.io.extras import MissingExtraError, require

    try:
        require("wsidicom", "dicom", "reading DICOM WSI")
    except MissingExtraError as exc:
        try:
            import openslide  # noqa: F401  (OpenSlide 4 reads DICOM WSI too)
        except ImportError:
            raise ImageReadError(path, str(exc)) from exc
        from napari_focusq.io.openslide import open_openslide

        if path.is_dir():  # OpenSlide opens a DICOM slide by any one of its files
            from napari_focusq.io.dicom import _is_dicom_file

            path = next(f for f in sorted(path.iterdir()) if f.is_file() and _is_dicom_file(f))
        return open_openslide(path)
    from napari_focusq.io.dicom import open_dicom

    return open_dicom(path)


def _open_pillow(path: Path) -> ImageSource:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("1", "LA"):
                im = im.convert("L")
            elif mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
                im = im.convert("RGBA" if mode == "PA" else "RGB")
            arr = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"too large to read as {path.suffix[1:].upper() or 'PNG/JPEG'} "
                                   "(convert it to a tiled TIFF)") from exc
    except Exception as exc:
        raise ImageReadError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]  # RGBA: alpha carries no focus information
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    arr = np.ascontiguousarray(arr)
    axes = "YXC" if arr.ndim == 3 else "YX"
    return ImageSource(path, [arr], axes, axes)
