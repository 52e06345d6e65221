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
    from wsidicom.geometry import Size, SizeMm
    from wsidicom.instance import ImageData, WsiInstance
    from wsidicom.metadata import (
        Equipment,
        Image,
        ImageType,
        Label,
        OpticalPath,
        Patient,
        Pyramid,
        Series,
        Slide,
        Study,
        WsiMetadata,
    )
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


# ---------------------------------------------------------------------------------------
# Tiled pyramidal TIFF: generic (OpenSlide's "generic-tiff") and Philips-style
def _pyramid(rgb: np.ndarray, min_side: int) -> list[np.ndarray]:
    """Levels halved by 2x2 averaging while the longest side stays >= ``min_side``."""
    levels = [rgb]
    while max(levels[-1].shape[:2]) // 2 >= min_side:
        a = levels[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        b = a[:h, :w].astype(np.float32)
        levels.append(np.rint((b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4)
                      .astype(np.uint8))
    return levels


def make_generic_tiff(rgb: np.ndarray, path: Path, pixel_size_um: float, *, tile: int = 256,
                      min_side: int = 500, icc_profile: bytes | None = None) -> Path:
    """A tiled pyramidal TIFF, one page per level, JPEG-free (zlib) so pixels are exact."""
    import tifffile

    extratags = [(34675, 7, len(icc_profile), icc_profile, True)] if icc_profile else []
    with tifffile.TiffWriter(path) as tw:
        for i, lvl in enumerate(_pyramid(rgb, min_side)):
            res = 1e4 / (pixel_size_um * rgb.shape[1] / lvl.shape[1])
            tw.write(lvl, tile=(tile, tile), photometric="rgb", compression="zlib",
                     resolution=(res, res), resolutionunit="CENTIMETER",
                     subfiletype=0 if i == 0 else 1, extratags=extratags if i == 0 else [],
                     metadata=None)
    return path


def _philips_xml(shapes: list[tuple[int, int]], pixel_size_um: float) -> str:
    reps = "".join(
        f'<DataObject ObjectType="PixelDataRepresentation">'
        f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
        f'&quot;{pixel_size_um * 1e-3 * rgb_ds:.9g}&quot; &quot;{pixel_size_um * 1e-3 * rgb_ds:.9g}&quot;</Attribute>'
        f'<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x1001" Element="0x8B08" '
        f'PMSVR="IUInt16">{i}</Attribute>'
        f'<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS" Group="0x2001" Element="0x115E" '
        f'PMSVR="IUInt32">{w}</Attribute>'
        f'<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_ROWS" Group="0x2001" Element="0x115D" '
        f'PMSVR="IUInt32">{h}</Attribute></DataObject>'
        for i, ((h, w), rgb_ds) in enumerate(zip(shapes, [shapes[0][1] / s[1] for s in shapes])))
    return ('<?xml version="1.0" encoding="UTF-8" ?>\n<DataObject ObjectType="DPUfsImport">'
            '<Attribute Name="DICOM_MANUFACTURER" Group="0x0008" Element="0x0070" PMSVR="IString">'
            'napari-focusq tests</Attribute>'
            '<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" PMSVR="IDataObjectArray">'
            '<Array><DataObject ObjectType="DPScannedImage">'
            '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" PMSVR="IString">WSI</Attribute>'
            '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8B01" '
            f'PMSVR="IDataObjectArray"><Array>{reps}</Array></Attribute>'
            '</DataObject></Array></Attribute></DataObject>')


def make_philips_tiff(rgb: np.ndarray, path: Path, pixel_size_um: float, *, tile: int = 256,
                      min_side: int = 500) -> Path:
    """A Philips-style TIFF: DPUfsImport XML, 'Philips' Software tag, one tiled page per level.

    As Philips' exporter does, each level's stored size is padded to whole tiles; the true
    size is in the XML (PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS/ROWS).
    """
    import tifffile

    levels = _pyramid(rgb, min_side)
    xml = _philips_xml([lv.shape[:2] for lv in levels], pixel_size_um)
    with tifffile.TiffWriter(path) as tw:
        for i, lvl in enumerate(levels):
            h, w = lvl.shape[:2]
            padded = np.full((-(-h // tile) * tile, -(-w // tile) * tile, 3), 255, np.uint8)
            padded[:h, :w] = lvl
            tw.write(padded, tile=(tile, tile), photometric="rgb", compression="zlib",
                     software="Philips DP v1.0", description=xml if i == 0 else f"level={i}",
                     subfiletype=0 if i == 0 else 1, metadata=None)
    return path


# ---------------------------------------------------------------------------------------
# CZI through pylibCZIrw's writer
def make_czi(planes: np.ndarray, path: Path, pixel_size_um: float, *, z_spacing_um: float | None = None,
             tile: int = 512) -> Path:
    """Write (H, W, 3) RGB or (Z, H, W) grey as a CZI mosaic of ``tile``-sized subblocks."""
    from pylibCZIrw import czi as pyczi

    rgb = planes.ndim == 3 and planes.shape[-1] == 3
    stack = planes[None] if rgb or planes.ndim == 2 else planes
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for z, plane in enumerate(stack):
            data = plane[..., ::-1] if rgb else plane[..., None]  # CZI stores colour as BGR
            for y in range(0, plane.shape[0], tile):
                for x in range(0, plane.shape[1], tile):
                    w.write(data=np.ascontiguousarray(data[y:y + tile, x:x + tile]),
                            plane={"Z": z, "C": 0, "T": 0}, location=(x, y))
        w.write_metadata(document_name=Path(path).stem, scale_x=pixel_size_um * 1e-6,
                         scale_y=pixel_size_um * 1e-6,
                         scale_z=(z_spacing_um or 0.0) * 1e-6)
    return path


# ---------------------------------------------------------------------------------------
# ICC profile: linear-light RGB with sRGB primaries (gamma 1.0), so converting to sRGB
# brightens mid-tones a lot (stored 128 -> about 188) and a test can see it was applied.
def linear_rgb_icc() -> bytes:
    """A minimal ICC v2 display profile (matrix + gamma-1.0 curves), built byte by byte."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", int(round(v * 65536)))

    def xyz(x, y, z) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    def text(t: str) -> bytes:
        return b"text" + bytes(4) + t.encode() + b"\0"

    def desc(t: str) -> bytes:
        b = t.encode() + b"\0"
        return b"desc" + bytes(4) + struct.pack(">I", len(b)) + b + bytes(4 + 4 + 2 + 1 + 67)

    gamma1 = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", 0x0100)
    tags = [(b"desc", desc("linear sRGB (napari-focusq tests)")), (b"cprt", text("CC0")),
            (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", gamma1), (b"gTRC", gamma1), (b"bTRC", gamma1)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = 128 + len(table) + len(body)
    header = (struct.pack(">I", size) + b"none" + struct.pack(">I", 0x02100000) + b"mntr" + b"RGB "
              + b"XYZ " + bytes(12) + b"acsp" + bytes(4) + bytes(4) + bytes(4) + bytes(4) + bytes(8)
              + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4))
    header += bytes(128 - len(header))
    return header + table + body
