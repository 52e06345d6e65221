"""The user's optics at scoring time (user_optics.py): options, OME metadata, the blur map, outputs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from tests.conftest import SVS_PIXEL_UM, TISSUE_YX

from napari_focusq.cli.app import main
from napari_focusq.config import Optics
from napari_focusq.export.outputs import read_heatmap_description
from napari_focusq.export.results import read_results
from napari_focusq.optics.psf import simulate_defocus
from napari_focusq.optics.user import (
    OpticsOptionError,
    immersion_index,
    ome_objective,
    optics_map,
    resolve_optics,
)

OME = """<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">
 <Instrument ID="Instrument:0"><Objective ID="Objective:0" LensNA="{na}" Immersion="{imm}" NominalMagnification="10"/></Instrument>
 <Image ID="Image:0" Name="x"><ObjectiveSettings ID="Objective:0"{ri}/>
  <Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="{w}" SizeY="{h}" SizeC="3" SizeZ="1" SizeT="1"
   PhysicalSizeX="{px}" PhysicalSizeY="{px}" Interleaved="true">
   <Channel ID="Channel:0:0" SamplesPerPixel="3" EmissionWavelength="{em}" EmissionWavelengthUnit="nm"/>
   <TiffData IFD="0" PlaneCount="1"/></Pixels></Image></OME>"""


def _ome(na=0.45, imm="Air", ri="", em=520, h=10, w=10, px=0.5):
    return OME.format(na=na, imm=imm, ri=f' RefractiveIndex="{ri}"' if ri else "", em=em, h=h, w=w, px=px)


def test_ome_objective_reads_na_immersion_and_emission():
    assert ome_objective(_ome(0.45, "Air")) == {"na": 0.45, "immersion": "air", "n": 1.0, "emission_um": 0.52}
    d = ome_objective(_ome(1.4, "Oil", ri="1.515"))
    assert d["na"] == 1.4 and d["n"] == 1.515
    # Inconsistent metadata (NA above the index) is not trusted.
    assert "na" not in ome_objective(_ome(1.2, "Air"))
    assert ome_objective("<not xml") is None


def test_resolve_optics_user_over_file_over_model():
    opt, src = resolve_optics("brightfield")
    assert opt == Optics() and set(src.values()) == {"model default"}
    opt, src = resolve_optics("brightfield", objective={"na": 0.45, "n": 1.0})
    assert opt.na == 0.45 and src["na"] == "file (OME LensNA)"
    opt, src = resolve_optics("brightfield", na=0.3, objective={"na": 0.45})
    assert opt.na == 0.3 and src["na"] == "user"
    opt, _ = resolve_optics("brightfield", na=1.4, immersion="oil", wavelength_um=0.55)
    assert opt.n == 1.518 and abs(opt.wavelengths_um[1] - 0.55) < 1e-9 and opt.wavelengths_um[0] > 0.6
    opt, src = resolve_optics("fluorescence", objective={"emission_um": 0.61})
    assert opt.wavelengths_um == (0.61,) and src["wavelength"].startswith("file")
    for bad in (dict(na=1.3), dict(na=0.8, immersion="honey"), dict(wavelength_um=520)):
        with pytest.raises(OpticsOptionError):
            resolve_optics("brightfield", **bad)
    assert immersion_index("Water") == 1.333 and immersion_index("1.47") == 1.47


def test_map_is_identity_for_the_model_optics_and_matches_blur_otherwise():
    base = Optics()
    m = optics_map(base, Optics())
    assert m.identity and np.allclose(m.to_user([0, 1, 3.5]), [0, 1, 3.5])
    hi = optics_map(base, Optics(na=0.95))
    lo = optics_map(base, Optics(na=0.45))
    z = np.array([1.0, 2.0, 4.0])
    # Geometric blur radius z·tan(asin(NA/n)): 1.13 µm per µm at 0.75, 3.04 at 0.95, 0.50 at
    # 0.45. The same model reading is a smaller defocus through a higher NA, a larger one
    # through a lower NA.
    assert (hi.to_user(z) < z).all() and (lo.to_user(z) > z).all()
    # The matched model-optics defocus has the user's MTF: far closer than the same z.
    # (Not the geometric ratio: with a pupil uniform in spatial frequency, DESIGN §3, a
    # high-NA defocus puts most light well inside its geometric disc.)
    from napari_focusq.optics.user import _mtf

    def d(zm):  # the map's own cost: log MTF over the model's 40 bands, floored at 3 %
        f = lambda m: np.log(np.maximum(m, 0.03))  # noqa: E731
        return np.mean((f(_mtf(4.0, 0.5, 0.54, 0.95, 1.0)) - f(_mtf(round(zm, 3), 0.5, 0.54, 0.75, 1.0))) ** 2)

    zm = float(np.interp(4.0, hi.user_z, hi.model_z))
    assert d(zm) < 0.5 * d(4.0) and d(zm) <= min(d(zm - 0.5), d(zm + 0.5)), (zm, d(zm), d(4.0))
    # Monotone, and the low-NA objective's in-focus blur reads as a model defocus > 0 that
    # maps back to 0.
    assert np.all(np.diff(lo.model_z) > 0) and lo.floor_um > 0.3
    assert lo.to_user([lo.floor_um])[0] == pytest.approx(0.0, abs=0.01)
    assert np.isnan(hi.to_user([np.nan])[0])


@pytest.fixture(scope="module")
def tissue(slide_crop):
    y, x = TISSUE_YX[0]
    return slide_crop(y - 200, x - 200, 700, 700)


def test_score_image_with_optics_maps_and_records(tissue):
    from napari_focusq import score_image

    blurred = simulate_defocus(tissue, 3.0, pixel_size_um=SVS_PIXEL_UM, optics=Optics(na=0.45))
    raw = score_image(blurred, pixel_size_um=SVS_PIXEL_UM, modality="brightfield")
    fm = score_image(blurred, pixel_size_um=SVS_PIXEL_UM, modality="brightfield", optics={"na": 0.45})
    assert raw.extra["optics"]["na"] == 0.75 and not raw.extra["optics"]["mapped_from_model_optics"]
    o = fm.extra["optics"]
    assert o["na"] == 0.45 and o["source"]["na"] == "user" and o["mapped_from_model_optics"]
    r, m = np.nanmedian(raw.defocus_um), np.nanmedian(fm.defocus_um)
    # Through NA 0.45, 3 µm blurs about as much as 1.3 µm does at 0.75: read unmapped it is
    # far too low; mapped, within 0.75 µm of the truth (bench_optics: MAE 0.38 µm over 0-4 µm).
    assert r < 2.0 and abs(m - 3.0) < 0.75, (r, m)
    assert np.allclose(fm.extra["defocus_model_optics_um"], raw.defocus_um, equal_nan=True)
    assert any("NA 0.45" in n for n in fm.extra["notes"])


def _ome_tiff(path, img, na, imm="Air"):
    h, w = img.shape[:2]
    tifffile.imwrite(path, img, photometric="rgb", description=_ome(na, imm, h=h, w=w, px=SVS_PIXEL_UM),
                     metadata=None)


def test_cli_score_records_optics_in_every_output(tissue, tmp_path, capsys):
    _ome_tiff(tmp_path / "lowna.ome.tif", tissue, 0.45)
    import shutil

    shutil.copy(tmp_path / "lowna.ome.tif", tmp_path / "user.ome.tif")
    out = tmp_path / "qc"
    assert main(["score", str(tmp_path / "lowna.ome.tif"), "--out", str(out)]) == 0
    assert main(["score", str(tmp_path / "user.ome.tif"), "--out", str(out), "--na", "1.4",
                 "--immersion", "oil"]) == 0
    rows = {r["stem"]: r for r in read_results(out / "results.tsv")}
    assert rows["lowna"]["na"] == "0.450" and rows["lowna"]["optics_source"] == "file (OME LensNA)"
    assert rows["user"]["na"] == "1.400" and rows["user"]["immersion_n"] == "1.518"
    assert rows["user"]["optics_source"] == "user"
    with open(out / "user.tiles.csv") as fh:
        tiles = list(csv.DictReader(fh))
    assert {t["na"] for t in tiles} == {"1.4"} and {t["immersion_n"] for t in tiles} == {"1.518"}
    desc = read_heatmap_description(out / "lowna.heatmap.tif")
    assert desc["optics"]["na"] == 0.45 and desc["optics"]["mapped_from_model_optics"]
    gj = json.loads((out / "user.geojson").read_text())
    assert gj["focusq"]["optics"]["na"] == 1.4


def test_cli_bad_optics_options_are_usage_errors(tmp_path, capsys):
    for opts in (["--na", "1.2"], ["--immersion", "honey"], ["--wavelength", "520"], ["--na", "0"]):
        assert main(["score", "x.tif", "--out", str(tmp_path), *opts]) == 2, opts
