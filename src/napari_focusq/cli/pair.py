"""``focusq pair IN OUT`` and ``focusq evaluate MODEL --pairs IN:OUT ...``: thin over pairfit.

A lab scans a slide twice, once with a focus offset; the pair's physical defocus (from
the transfer function between the captures) is then a real label to check a model on.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from napari_focusq.errors import PairInputError


def read_capture(path, pixel_size_um=None):
    """(plane, pixel size µm, objective metadata or None) of one capture: level 0, middle plane."""
    from napari_focusq.io.formats import open_image

    with open_image(path, pixel_size_um=pixel_size_um) as src:
        px = src.pixel_size_um
        if px is None:
            raise PairInputError(f"{path}: pixel size unknown (not in the file's metadata); pass --pixel-size UM")
        plane = np.asarray(src.read_plane(z=src.n_z // 2 if "Z" in src.axes else None))
        return plane, float(px), getattr(src, "objective", None)


def load_pair(in_path, out_path, pixel_size_um=None):
    """Both captures, their common pixel size and the in-focus one's objective metadata."""
    a, pa, obj = read_capture(in_path, pixel_size_um)
    b, pb, _ = read_capture(out_path, pixel_size_um)
    if abs(pa - pb) > 0.01 * pa:
        raise PairInputError(f"{in_path} is {pa:g} µm/px and {out_path} is {pb:g} µm/px: captures of one "
                             "field must share a pixel size (register them first)")
    return a, b, pa, obj


def fit_files(in_path, out_path, *, pixel_size_um=None, modality="auto", na=None, immersion=None,
              wavelength_um=None, reference="capture", max_shift_px=1.0):
    """pairfit.fit_pair on two files, with the optics from the options or the file (OME)."""
    from napari_focusq.demo import _modality
    from napari_focusq.optics.pairfit import fit_pair
    from napari_focusq.optics.user import resolve_optics

    a, b, px, objective = load_pair(in_path, out_path, pixel_size_um)
    mod = _modality(a, modality)
    optics, source = resolve_optics(mod, na=na, immersion=immersion, wavelength_um=wavelength_um,
                                    objective=objective)
    # NA stated by the user or the file: z is fitted alone; otherwise the NA is fitted too.
    fit = fit_pair(a, b, pixel_size_um=px, modality=mod, optics=optics,
                   na=None if source["na"] == "model default" else optics.na,
                   reference=reference, max_shift_px=max_shift_px, names=(str(in_path), str(out_path)))
    return fit, mod, px, source


def main_pair(args) -> int:
    """``focusq pair IN OUT``: print the physical defocus, its residual, and write the plot."""
    from napari_focusq._atomic import write_text
    from napari_focusq.optics.pairfit import plot_pair_fit

    fit, mod, px, source = fit_files(args.input, args.output, pixel_size_um=args.pixel_size,
                                     modality=args.modality, na=args.na, immersion=args.immersion,
                                     wavelength_um=args.wavelength, reference=args.reference,
                                     max_shift_px=args.max_shift)
    plot = Path(args.plot) if args.plot else Path(f"{Path(args.output).name.split('.')[0]}.pair.png")
    plot_pair_fit(fit, plot, title=f"{Path(args.output).name} vs {Path(args.input).name}: "
                                   f"z = {fit.z_um:.2f} µm, residual {fit.residual:.3f}, R² {fit.r2:.3f}")
    na_txt = f"NA {fit.na:.3f} ({'fitted' if fit.na_fitted else source['na']})"
    print(f"defocus {fit.z_um:.3f} µm  ({na_txt}, n {fit.n:g}, λ {fit.wavelength_um:g} µm, {mod}, {px:g} µm/px)")
    r2 = f"{fit.r2:.4f}" if fit.r2 == fit.r2 else "- (flat H: no defocus to explain)"
    print(f"fit residual {fit.residual:.4f} (weighted RMS of H), R² {r2}, gain {fit.gain:.3f}; "
          f"registration shift ({fit.shift_px[0]:+.2f}, {fit.shift_px[1]:+.2f}) px, coherence {fit.coherence:.3f}")
    print(f"plot: {plot}")
    if args.json:
        d = {"in": str(args.input), "out": str(args.output), "modality": mod, "pixel_size_um": px,
             **fit.to_dict(), "optics_source": source}
        write_text(args.json, json.dumps(d, indent=1))
    if fit.r2 < 0.8:
        print(f"focusq: warning: the PSF fits the transfer function poorly (R² {fit.r2:.2f}): the captures "
              "may differ by more than defocus (tilt, aberrations, bleaching, a different field)",
              file=sys.stderr)
    return 0


# ------------------------------------------------------------------ evaluate --pairs
def parse_pairs(specs, csv_path=None) -> list[tuple[str, str]]:
    """``IN:OUT`` specs (the last ':' splits, so Windows drive letters survive) and/or a CSV
    with columns ``in,out``."""
    pairs = []
    for s in specs or []:
        if ":" not in s:
            raise PairInputError(f"--pairs expects IN:OUT; got {s!r}")
        a, b = s.rsplit(":", 1)
        pairs.append((a, b))
    if csv_path:
        try:
            with open(csv_path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise PairInputError(f"{csv_path}: cannot read the pairs list ({exc.strerror or exc})") from exc
        if not rows or not {"in", "out"} <= set(rows[0]):
            raise PairInputError(f"{csv_path}: expected a CSV with columns in,out (one pair per row)")
        base = Path(csv_path).parent
        for r in rows:
            pairs.append(tuple(str(p if Path(p).is_absolute() else base / p) for p in (r["in"], r["out"])))
    if not pairs:
        raise PairInputError("no pairs given")
    return pairs


def evaluate_pairs(model, pairs, *, pixel_size_um=None, modality="auto", na=None, immersion=None,
                   wavelength_um=None, reference="capture", progress=None) -> dict:
    """Physical defocus of each pair beside the model's median reading of both captures."""
    from napari_focusq.optics.user import resolve_optics
    from napari_focusq.scoring.pipeline import score_image

    rows = []
    for i, (a_path, b_path) in enumerate(pairs):
        fit, mod, px, source = fit_files(a_path, b_path, pixel_size_um=pixel_size_um, modality=modality,
                                         na=na, immersion=immersion, wavelength_um=wavelength_um,
                                         reference=reference)
        a, b, _, objective = load_pair(a_path, b_path, pixel_size_um)
        optics, _ = resolve_optics(mod, na=na if na is not None else (fit.na if fit.na_fitted else None),
                                   immersion=immersion, wavelength_um=wavelength_um, objective=objective)
        reads = []
        for img in (a, b):
            fmap = score_image(img, pixel_size_um=px, modality=mod, model=model, optics=optics)
            d = fmap.defocus_um[np.isfinite(fmap.defocus_um)]
            reads.append(float(np.median(d)) if d.size else float("nan"))
        rows.append({"in": str(a_path), "out": str(b_path), "z_physical_um": fit.z_um, "na": fit.na,
                     "fit_r2": fit.r2, "read_in_um": reads[0], "read_out_um": reads[1]})
        if progress:
            progress(i + 1, len(pairs))
    z = np.array([r["z_physical_um"] for r in rows])
    p = np.array([r["read_out_um"] for r in rows])
    ok = np.isfinite(p)
    out = {"model": str(model), "pairs": rows,
           "mae_um": float(np.mean(np.abs(p[ok] - z[ok]))) if ok.any() else None}
    if ok.sum() >= 3:
        from scipy.stats import spearmanr

        out["spearman"] = float(spearmanr(z[ok], p[ok]).correlation)
    return out


def main_evaluate_pairs(args) -> int:
    from napari_focusq._atomic import write_text

    pairs = parse_pairs(args.pairs, getattr(args, "pairs_csv", None))
    res = evaluate_pairs(args.model, pairs, pixel_size_um=args.pixel_size, modality=args.modality, na=args.na,
                         immersion=args.immersion, wavelength_um=args.wavelength,
                         progress=lambda i, n: print(f"[{i}/{n}] pair fitted and scored", file=sys.stderr))
    print(f"{'pair (out capture)':<40}{'physical µm':>12}{'NA':>6}{'fit R²':>8}{'reads in':>10}{'reads out':>10}")
    for r in res["pairs"]:
        print(f"{Path(r['out']).name[:39]:<40}{r['z_physical_um']:>12.2f}{r['na']:>6.2f}{r['fit_r2']:>8.3f}"
              f"{r['read_in_um']:>10.2f}{r['read_out_um']:>10.2f}")
    mae = res["mae_um"]
    print(f"{len(pairs)} pairs: MAE of the out-of-focus reading against the physical defocus "
          f"{'-' if mae is None else f'{mae:.3f}'} µm" +
          (f", Spearman {res['spearman']:.3f}" if "spearman" in res else ""))
    if getattr(args, "out", None):
        write_text(args.out, json.dumps(res, indent=1))
    return 0
