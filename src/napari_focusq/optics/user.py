"""The user's optics at scoring time: NA, immersion and wavelength, and what µm mean for them.

The shipped models were trained on one objective (20x/0.75 dry, DESIGN §3): a reading
is "the defocus that would blur this much through that objective". The same blur is a
different defocus through another objective (the blur radius grows as z·tan(asin(NA/n)),
and a low-NA objective's depth of field hides the first micrometres). So a reading is
mapped to the user's objective by matching blur: for each defocus z of the user's
objective, the model-optics defocus z' whose MTF (over the bands the model reads, on the
model's 0.5 µm grid) is closest in log amplitude; the table z -> z' is made monotone and
inverted. Readings below what the user's in-focus image already reads map to 0.

The options come from the user (``--na``, ``--immersion``, ``--wavelength``), else from the
file (OME ``Objective/LensNA``, ``Immersion``, ``ObjectiveSettings/RefractiveIndex``,
``Channel/EmissionWavelength``), else they are the model's own, and every output records
them and where they came from.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import xml.etree.ElementTree as ET

import numpy as np

from napari_focusq.config import WORKING_PIXEL_UM, Optics
from napari_focusq.errors import OpticsOptionError

__all__ = ["IMMERSION_INDEX", "OpticsOptionError", "OpticsMap", "immersion_index", "ome_objective",
           "resolve_optics", "optics_map", "parse_optics"]

#: Refractive index of the usual immersion media (OME's Immersion names, lower case).
IMMERSION_INDEX = {"air": 1.0, "dry": 1.0, "water": 1.333, "silicone": 1.406, "glycerol": 1.47,
                   "glycerin": 1.47, "oil": 1.518}
#: Log-amplitude floor of the MTF match: below ~3 % of the in-focus contrast, a band of a
#: real tile holds noise and JPEG residue, not the optics, so the model cannot read it either.
_MTF_FLOOR = 0.03
#: Band centres (cycles per working pixel) the match is made over: the fast model's 40 bands.
_BANDS = (np.arange(40) + 0.5) * 4 / 320
_USER_Z_STEP, _MODEL_Z_STEP = 0.25, 0.1
#: Model-side defocus range of the table: past it the shipped models' readings are
#: extrapolation (trained to 6-8 µm), and a high-NA PSF there is costly to compute.
_MODEL_Z_MAX = 14.0


def immersion_index(value) -> float:
    """Refractive index from a number (``1.518``) or a medium (``oil``, ``water``, ``air``...)."""
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        s = str(value).strip().lower()
        if s in IMMERSION_INDEX:
            return IMMERSION_INDEX[s]
        try:
            n = float(s)
        except ValueError:
            raise OpticsOptionError(f"immersion must be a refractive index or one of "
                                    f"{', '.join(sorted(IMMERSION_INDEX))}; got {value!r}") from None
    if not 1.0 <= n <= 2.0:
        raise OpticsOptionError(f"immersion refractive index must be in [1, 2]; got {n}")
    return n


def ome_objective(xml: str, index: int = 0) -> dict | None:
    """``{"na", "n", "immersion", "emission_um"}`` (those present) of image ``index`` in OME-XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    tag = lambda e: e.tag.rsplit("}", 1)[-1]  # noqa: E731
    images = [e for e in root.iter() if tag(e) == "Image"]
    image = images[index] if index < len(images) else (images[0] if images else None)
    objectives = {e.attrib.get("ID"): e for e in root.iter() if tag(e) == "Objective"}
    out: dict = {}
    settings = next((e for e in image if tag(e) == "ObjectiveSettings"), None) if image is not None else None
    obj = objectives.get(settings.attrib.get("ID")) if settings is not None else None
    if obj is None and len(objectives) == 1:
        obj = next(iter(objectives.values()))
    if obj is not None:
        if _pos(obj.attrib.get("LensNA")):
            out["na"] = float(obj.attrib["LensNA"])
        imm = obj.attrib.get("Immersion", "").lower()
        if imm in IMMERSION_INDEX:
            out["immersion"] = imm
            out["n"] = IMMERSION_INDEX[imm]
    if settings is not None and _pos(settings.attrib.get("RefractiveIndex")):
        out["n"] = float(settings.attrib["RefractiveIndex"])
    if image is not None:
        for ch in (e for e in image.iter() if tag(e) == "Channel"):
            em = ch.attrib.get("EmissionWavelength")
            if _pos(em):
                unit = ch.attrib.get("EmissionWavelengthUnit", "nm")
                f = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "pm": 1e-6}.get(unit)
                if f:
                    out["emission_um"] = float(em) * f
                break
    if "na" in out and "n" in out and not out["na"] < out["n"]:
        out.pop("na")  # inconsistent metadata: trust neither
    return out or None


def _pos(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v)) and float(v) > 0
    except ValueError:
        return False


def parse_optics(optics) -> dict:
    """An Optics, a dict ``{"na", "immersion"|"n", "wavelength_um"}`` or None -> option dict."""
    if optics is None:
        return {}
    if isinstance(optics, Optics):
        return {"na": optics.na, "immersion": optics.n, "wavelength_um": tuple(optics.wavelengths_um)}
    if isinstance(optics, dict):
        d = dict(optics)
        if "n" in d:
            d.setdefault("immersion", d.pop("n"))
        unknown = set(d) - {"na", "immersion", "wavelength_um"}
        if unknown:
            raise OpticsOptionError(f"unknown optics keys {sorted(unknown)}; use na, immersion, wavelength_um")
        return {k: v for k, v in d.items() if v is not None}
    raise OpticsOptionError(f"optics must be an Optics, a dict or None; got {type(optics).__name__}")


def resolve_optics(modality: str, *, na=None, immersion=None, wavelength_um=None, objective: dict | None = None,
                   base: Optics | None = None) -> tuple[Optics, dict]:
    """The optics to score with, each part from the user, else the file, else ``base``
    (the model's optics; the modality's defaults when None), and where each came from."""
    base = base or Optics.for_modality(modality)
    obj = objective or {}
    src = {}
    if na is not None:
        na_v, src["na"] = float(na), "user"
    elif "na" in obj:
        na_v, src["na"] = float(obj["na"]), "file (OME LensNA)"
    else:
        na_v, src["na"] = base.na, "model default"
    if immersion is not None:
        n_v, src["n"] = immersion_index(immersion), "user"
    elif "n" in obj:
        n_v, src["n"] = float(obj["n"]), "file (OME)"
    elif na is not None and float(na) >= 1.0:
        raise OpticsOptionError(f"NA {na} needs an immersion medium (--immersion oil, water or an index)")
    else:
        n_v, src["n"] = base.n, "model default"
    if wavelength_um is not None:
        w = (wavelength_um,) if np.isscalar(wavelength_um) else tuple(wavelength_um)
        w = tuple(float(v) for v in w)
        if any(not (0.2 <= v <= 2.0) for v in w):
            raise OpticsOptionError(f"wavelength must be given in µm (0.2-2); got {wavelength_um}")
        src["wavelength"] = "user"
    elif modality == "fluorescence" and "emission_um" in obj:
        w, src["wavelength"] = (float(obj["emission_um"]),), "file (OME EmissionWavelength)"
    else:
        w, src["wavelength"] = tuple(base.wavelengths_um), "model default"
    if modality == "brightfield" and len(w) == 1:
        # One wavelength for RGB: the green channel's, the others shifted with it.
        w = tuple(v * w[0] / base.wavelengths_um[len(base.wavelengths_um) // 2] for v in base.wavelengths_um)
    if not 0 < na_v < n_v:
        raise OpticsOptionError(f"NA {na_v:g} must be below the immersion index {n_v:g} "
                                f"(NA from {src['na']}, index from {src['n']})")
    try:
        opt = dataclasses.replace(base, na=na_v, n=n_v, wavelengths_um=w)
    except ValueError as exc:
        raise OpticsOptionError(str(exc)) from exc
    return opt, src


def _mid(w) -> float:
    return float(w[len(w) // 2])


@functools.lru_cache(maxsize=64)
def _mtf(z, px, lam, na, n) -> np.ndarray:
    from napari_focusq.optics.pairfit import otf_profile

    return np.abs(otf_profile(z, px, lam, na, n, _BANDS / px))


@dataclasses.dataclass(frozen=True)
class OpticsMap:
    """Model-optics readings -> the user's µm (by matching blur), with the table it uses."""

    user_z: np.ndarray  # µm of defocus through the user's objective
    model_z: np.ndarray  # the model-optics defocus of the same blur (non-decreasing)
    identity: bool

    def to_user(self, reading):
        """Map model readings (µm, any shape; NaN kept) to the user's objective."""
        r = np.asarray(reading, dtype=np.float64)
        if self.identity:
            return r.astype(np.float32)
        out = np.interp(r, self.model_z, self.user_z)
        top = r > self.model_z[-1]
        if top.any():  # beyond the table: the last slope
            s = (self.user_z[-1] - self.user_z[-2]) / max(self.model_z[-1] - self.model_z[-2], 1e-6)
            out[top] = self.user_z[-1] + s * (r[top] - self.model_z[-1])
        return np.where(np.isfinite(r), out, np.nan).astype(np.float32)

    def slope(self, reading):
        """d(user µm) / d(model µm) at the readings: scales errors and spreads."""
        if self.identity:
            return np.ones(np.shape(reading), np.float32)
        r = np.asarray(reading, dtype=np.float64)
        h = 0.1
        return ((self.to_user(r + h) - self.to_user(np.maximum(r - h, 0))) /
                (r + h - np.maximum(r - h, 0))).astype(np.float32)

    @property
    def floor_um(self) -> float:
        """Model reading of an in-focus tile through the user's objective (0 when alike)."""
        return float(self.model_z[0])

    @property
    def blind_um(self) -> float:
        """The user defocus whose blur the model-optics table cannot tell from focus."""
        moved = self.model_z > self.model_z[0] + _MODEL_Z_STEP
        return float(self.user_z[np.argmax(moved)]) if moved.any() else float(self.user_z[-1])


def optics_map(model_optics: Optics, user_optics: Optics, *, user_grid_um: float = WORKING_PIXEL_UM,
               model_grid_um: float = WORKING_PIXEL_UM, z_max_um: float = 12.0) -> OpticsMap:
    """The blur-matching map from a model's optics and grid to the user's (see module doc).

    ``user_grid_um`` is the physical size of one pixel of the tiles the model reads (0.25
    for the fine grid); ``model_grid_um`` the size the model was trained at.
    """
    lam_m, lam_u = _mid(model_optics.wavelengths_um), _mid(user_optics.wavelengths_um)
    key_m = (round(lam_m, 6), round(model_optics.na, 6), round(model_optics.n, 6), round(model_grid_um, 6))
    key_u = (round(lam_u, 6), round(user_optics.na, 6), round(user_optics.n, 6), round(user_grid_um, 6))
    if key_m == key_u:
        z = np.array([0.0, z_max_um])
        return OpticsMap(z, z, True)
    return _build_map(key_m, key_u, float(z_max_um))


@functools.lru_cache(maxsize=4)
def _model_table(key_m):
    lam_m, na_m, n_m, g_m = key_m
    zm = np.arange(0.0, _MODEL_Z_MAX + 1e-9, _MODEL_Z_STEP)
    floor = math.log(_MTF_FLOOR)
    lm = np.stack([np.maximum(np.log(np.maximum(_mtf(float(z), g_m, lam_m, na_m, n_m), 1e-12)), floor)
                   for z in zm])
    return zm, lm


@functools.lru_cache(maxsize=16)
def _build_map(key_m, key_u, z_max_um) -> OpticsMap:
    lam_m, na_m, n_m, g_m = key_m
    lam_u, na_u, n_u, g_u = key_u
    # Model-side z' wide enough for the user's largest blur (geometric radius ratio).
    t = lambda na, n: (na / n) / math.sqrt(1 - (na / n) ** 2)  # noqa: E731
    zm, lm = _model_table(key_m)
    floor = math.log(_MTF_FLOOR)
    # User-side range: as far as the model-side table reaches (geometric blur ratio).
    ratio = t(na_u, n_u) / t(na_m, n_m) * g_m / g_u
    zu = np.arange(0.0, min(z_max_um, _MODEL_Z_MAX / max(ratio, 1e-6)) + 1e-9, _USER_Z_STEP)
    best = np.empty_like(zu)
    for i, z in enumerate(zu):
        lu = np.maximum(np.log(np.maximum(_mtf(float(z), g_u, lam_u, na_u, n_u), 1e-12)), floor)
        cost = ((lm - lu[None]) ** 2).sum(1)
        j = int(np.argmin(cost))
        # Parabolic refinement between grid steps.
        if 0 < j < len(zm) - 1:
            c0, c1, c2 = cost[j - 1], cost[j], cost[j + 1]
            d = c0 - 2 * c1 + c2
            best[i] = zm[j] + (0.5 * (c0 - c2) / d * _MODEL_Z_STEP if d > 0 else 0.0)
        else:
            best[i] = zm[j]
    best = np.maximum.accumulate(best)
    if len(best) > 4 and best[-1] >= zm[-1] - _MODEL_Z_STEP:  # saturated at the table's end
        keep = best < zm[-1] - _MODEL_Z_STEP
        keep[: 2] = True
        zu, best = zu[keep], best[keep]
    # Strictly increasing for the inversion; flat stretches (blur the model cannot tell
    # apart) map to their first user z.
    best = best + np.arange(len(best)) * 1e-6
    return OpticsMap(zu, best, False)


# ------------------------------------------------------------------ scoring
@dataclasses.dataclass(frozen=True)
class ScoringOptics:
    """What a scoring run measures in: the optics, where each part came from, and the map."""

    optics: Optics
    source: dict
    model_optics: Optics
    map: OpticsMap

    def record(self) -> dict:
        """The optics as every output records them (JSON-able)."""
        o = self.optics
        return {"na": o.na, "immersion_n": o.n, "wavelengths_um": list(o.wavelengths_um),
                "source": dict(self.source), "mapped_from_model_optics": not self.map.identity,
                "model_optics": {"na": self.model_optics.na, "immersion_n": self.model_optics.n,
                                 "wavelengths_um": list(self.model_optics.wavelengths_um)}}


def model_optics(fm, modality: str) -> Optics:
    """The optics a model was trained with (its metadata), else the modality's defaults."""
    d = (getattr(fm, "meta", None) or {}).get("optics")
    try:
        return Optics.from_dict(d) if d else Optics.for_modality(modality)
    except (KeyError, TypeError, ValueError):
        return Optics.for_modality(modality)


def scoring_optics(optics, modality: str, fm, objective: dict | None = None,
                   user_grid_um: float = WORKING_PIXEL_UM) -> ScoringOptics:
    """Resolve the user's ``optics`` (Optics, dict or None) against the file's objective
    metadata and the model's optics, and build the reading map."""
    opts = parse_optics(optics)
    base = model_optics(fm, modality)
    opt, source = resolve_optics(modality, na=opts.get("na"), immersion=opts.get("immersion"),
                                 wavelength_um=opts.get("wavelength_um"), objective=objective, base=base)
    m = optics_map(base, opt, user_grid_um=user_grid_um, model_grid_um=float(getattr(fm, "working_pixel_um",
                                                                                     WORKING_PIXEL_UM)))
    return ScoringOptics(opt, source, base, m)


def apply_optics(fmap, so: ScoringOptics) -> None:
    """Readings (and their spread and expected error) into the user's µm, recorded in ``fmap``."""
    fmap.extra["optics"] = so.record()
    if so.map.identity:
        return
    raw = fmap.defocus_um
    slope = so.map.slope(np.nan_to_num(raw, nan=0.0))
    fmap.extra["defocus_model_optics_um"] = raw
    fmap.defocus_um = so.map.to_user(raw)
    if "field_um" in fmap.extra:  # sparse fields' one reading (sparse_scoring.field_reading)
        fmap.extra["field_um"] = float(so.map.to_user([fmap.extra["field_um"]])[0])
    for key in ("spread_um", "expected_error_um"):
        if key in fmap.extra and np.shape(fmap.extra[key]) == np.shape(raw):
            fmap.extra[key] = (np.asarray(fmap.extra[key], np.float32) * slope).astype(np.float32)
    o = so.optics
    notes = fmap.extra.setdefault("notes", [])
    notes.append(f"µm for NA {o.na:g}, n {o.n:g}, λ {_mid(o.wavelengths_um):g} µm ({so.source['na']}); the model "
                 f"reads blur as through NA {so.model_optics.na:g}, n {so.model_optics.n:g}, mapped by matching blur")
    if so.map.blind_um >= 0.5:
        notes.append(f"through NA {o.na:g} defocus below about {so.map.blind_um:.2g} µm blurs too little to "
                     "measure (depth of field): such tiles read 0")
