"""Small real files of every slide format the project can write, made from the sample slide.

DICOM WSI through wsidicom's own writer (``WsiDicom.save``), CZI through pylibCZIrw's
writer, generic and Philips-style tiled pyramidal TIFF through tifffile. Each function
writes into a folder the caller owns (tests use ``tmp_path``).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def _even(n: int) -> int:
    # wsidicom pads odd-length native pixel data when writing but not when reading it back
    return n + n % 2


# ---------------------------------------------------------------------------------------
# DICOM WSI (VL Whole Slide Microscopy Image), uncompressed frames so pixels survive exactly
def make_dicom_wsi(rgb: np.ndarray, folder: Path, pixel_size_um: float, *, tile: int = 256,
                   label: np.ndarray | None = None, pyramid: bool = True,
                   icc_profile: bytes | None = None) -> Path:
    """Write ``rgb`` (H, W, 3 uint8) as a DICOM WSI folder (one file per level); returns it."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    from wsidicom import WsiDicom
    from wsidicom.codec import Encoder
    from wsidicom.geometry import Point, Size, SizeMm
    from wsidicom.instance import ImageData, WsiInstance
    from wsidicom.metadata import (Equipment, Image, ImageType, Label, OpticalPath, Patient, Pyramid,
                                   Series, Slide, Study, WsiMetadata)
    from wsidicom.metadata.sample import SlideSample
    from wsidicom.metadata.schema.dicom import WsiMetadataDicomSchema
    from wsidicom.source import Source

    class TiledArray(ImageData):
        def __init__(self, pixels: np.ndarray, tile_px: int, spacing_um: float | None):
            self._px, self._tile, self._spacing = pixels, tile_px, spacing_um
            super().__init__(Encoder.create(self.transfer_syntax, 8, "RGB"))

        transfer_syntax = ExplicitVRLittleEndian
        samples_per_pixel = 3
        bits = 8
        photometric_interpretation = "RGB"
        image_coordinate_system = None
        thread_safe = True
        lossy_compression = None
        transcoder = None

        @property
        def image_size(self):
            return Size(self._px.shape[1], self._px.shape[0])

        @property
        def tile_size(self):
            return Size(self._tile, self._tile)

        @property
        def pixel_spacing(self):
            return None if self._spacing is None else SizeMm(self._spacing / 1e3, self._spacing / 1e3)

        @property
        def imaged_size(self):
            return None

        def get_decoded_tile(self, tile_point, z, path, cache=True):
            t = self._tile
            out = np.full((t, t, 3), 255, np.uint8)  # edge tiles padded with white glass
            part = self._px[tile_point.y * t:(tile_point.y + 1) * t, tile_point.x * t:(tile_point.x + 1) * t]
            out[:part.shape[0], :part.shape[1]] = part
            return out

        def get_encoded_tile(self, tile, z, path):
            return self.encoder.encode(self.get_decoded_tile(tile, z, path))

    metadata = WsiMetadata(
        study=Study(uid=generate_uid()), series=Series(uid=generate_uid()), patient=Patient(),
        equipment=Equipment(manufacturer="napari-focusq tests"),
        slide=Slide(samples=[SlideSample(identifier="sample", uid=generate_uid())]),
        pyramid=Pyramid(image=Image(pixel_spacing=SizeMm(pixel_size_um / 1e3, pixel_size_um / 1e3)),
                        optical_paths=[OpticalPath(identifier="0", icc_profile=icc_profile)],
                        uid=generate_uid()),
        label=Label(),
        frame_of_reference_uid=generate_uid(), dimension_organization_uids=[generate_uid()],
    )

    class ArraySource(Source):
        def __init__(self):
            super().__init__()
            self._levels = [self._instance(TiledArray(rgb, tile, pixel_size_um), ImageType.VOLUME, 0)]
            self._labels = ([] if label is None else
                            [self._instance(TiledArray(label, _even(max(label.shape[:2])), None), ImageType.LABEL)])

        @staticmethod
        def _instance(data, image_type, pyramid_index=None):
            ds = WsiMetadataDicomSchema().dump(metadata, image_type, False)
            return WsiInstance.create_instance(data, ds, image_type, pyramid_index)

        base_dataset = property(lambda self: self._levels[0].dataset)
        level_instances = property(lambda self: self._levels)
        label_instances = property(lambda self: self._labels)
        overview_instances = property(lambda self: [])
        thumbnail_instances = property(lambda self: [])
        annotation_instances = property(lambda self: [])

        def close(self):
            pass

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with WsiDicom(ArraySource()) as wsi:
        wsi.save(folder, add_missing_levels=pyramid, workers=1)
    return folder
