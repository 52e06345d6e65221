"""``focusq``'s argument parser: every command's options and their types, the exit statuses, UsageError."""
from __future__ import annotations

import argparse
import sys

from napari_focusq.errors import UsageError
from napari_focusq.models.registry import PRESETS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(msg: str) -> None:
    print(f"focusq: {msg}", file=sys.stderr, flush=True)


def _bar():
    from napari_focusq.progress import StderrBar

    return StderrBar()


# --------------------------------------------------------------------------- types
def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {s!r}")
    return v


def _slice(s: str):
    if s in ("auto", "per-tile"):
        return s
    try:
        return _nonneg_int(s)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, per-tile or a plane index; got {s!r}") from None


def _z_list(s: str) -> list[float]:
    try:
        zs = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated µm values like 0,1,2,4; got {s!r}") from None
    if not zs or any(z != z or abs(z) == float("inf") for z in zs):
        raise argparse.ArgumentTypeError(f"expected comma-separated µm values like 0,1,2,4; got {s!r}")
    return zs


def _layer_list(s: str) -> list[tuple[float, float, str | None]]:
    out = []
    for part in (v.strip() for v in s.split(",")):
        if not part:
            continue
        bits = part.split(":", 2)
        try:
            depth, weight = float(bits[0]), float(bits[1])
        except (ValueError, IndexError):
            raise argparse.ArgumentTypeError(f"expected DEPTH:WEIGHT[:IMAGE],... like 2:0.3,4:0.2; got {s!r}") from None
        if not (abs(depth) < float("inf") and 0 <= weight < float("inf")):
            raise argparse.ArgumentTypeError(f"layer depth must be finite and weight non-negative; got {part!r}")
        out.append((depth, weight, bits[2] if len(bits) > 2 and bits[2] else None))
    if not out:
        raise argparse.ArgumentTypeError(f"expected DEPTH:WEIGHT[:IMAGE],... like 2:0.3,4:0.2; got {s!r}")
    return out


# -------------------------------------------------------------------------- parser
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; shows defaults that are not None."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default not in (None, argparse.SUPPRESS, False) and "%(default)" not in h \
                and action.option_strings:
            h += " (default: %(default)s)"
        return h


def _sub(subs, name: str, help: str, examples: str):
    return subs.add_parser(name, help=help, description=help, epilog="examples:\n" + examples,
                           formatter_class=_Formatter)


def _score_options(p, *, threshold: bool = True) -> None:
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", dest="pixel_size",
                   help="level-0 pixel size in µm (overrides the file's metadata; required when it has none)")
    p.add_argument("--modality", choices=("auto", "brightfield", "fluorescence"), default="auto",
                   help="auto guesses from the data (RGB on a bright background = brightfield)")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="shipped model name (default, fast, inception) or a .safetensors checkpoint")
    if threshold:
        p.add_argument("--threshold-um", type=_positive_float, default=2.0, metavar="UM",
                       help="tiles further from focus are excluded; a slide passes if its p90 is within it")
    p.add_argument("--slice", type=_slice, default="auto", metavar="auto|per-tile|N",
                   help="z-stacks: the sharpest plane (auto), the sharpest per tile, or plane N")
    p.add_argument("--level", type=_nonneg_int, default=None, metavar="N",
                   help="pyramid level to read (default: the one nearest the 0.5 µm/px working resolution)")
    _optics_options(p)
    _memory_option(p)


def _wavelengths(s: str):
    vals = _z_list(s)
    if any(not 0.2 <= v <= 2.0 for v in vals):
        raise argparse.ArgumentTypeError(f"wavelengths in µm (0.2-2), e.g. 0.52 or 0.61,0.54,0.47; got {s!r}")
    return vals[0] if len(vals) == 1 else tuple(vals)


def _optics_options(p) -> None:
    """--na / --immersion / --wavelength: the user's objective (user_optics.py)."""
    g = p.add_argument_group("the objective (default: the file's OME metadata, else the model's 20x/0.75 dry)")
    g.add_argument("--na", type=_positive_float, default=None, metavar="NA",
                   help="numerical aperture of the objective the images were taken with; µm are then for it")
    g.add_argument("--immersion", default=None, metavar="N|MEDIUM",
                   help="immersion refractive index or medium: air, water, silicone, glycerol, oil (1.518)")
    g.add_argument("--wavelength", type=_wavelengths, default=None, metavar="UM",
                   help="emission wavelength (fluorescence) or the green channel's (brightfield), µm")


def _check_optics(args) -> None:
    """Bad --na / --immersion / --wavelength are usage errors, found before any input is read."""
    if getattr(args, "na", None) is None and getattr(args, "immersion", None) is None \
            and getattr(args, "wavelength", None) is None:
        return
    from napari_focusq.optics.user import OpticsOptionError, resolve_optics

    for mod in (("brightfield", "fluorescence") if getattr(args, "modality", "auto") == "auto" else (args.modality,)):
        try:
            resolve_optics(mod, na=args.na, immersion=args.immersion, wavelength_um=args.wavelength)
        except OpticsOptionError as exc:
            raise UsageError(str(exc)) from exc


def _memory_option(p) -> None:
    from napari_focusq.io.budget import DEFAULT_MAX_MEMORY_MB, ENV_VAR

    p.add_argument("--max-memory", type=_positive_float, default=None, metavar="MB", dest="max_memory",
                   help=f"memory budget per input: a file whose declared size needs more is refused "
                        f"(default: ${ENV_VAR} or {DEFAULT_MAX_MEMORY_MB})")


def build_parser() -> argparse.ArgumentParser:
    """The ``focusq`` argument parser (one sub-parser per command)."""
    from napari_focusq import __version__

    parser = argparse.ArgumentParser(
        prog="focusq", formatter_class=_Formatter,
        description="How far out of focus each tile of a slide or z-stack is, in µm.",
        epilog="examples:\n  focusq demo --out demo/\n  focusq score slide.svs --out qc/\n"
               "  focusq score --help\n\nexit status: 0 ok, 1 some input failed, 2 bad usage, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"focusq {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _sub(subs, "score", "score slides or images tile by tile and write QC outputs",
             "  focusq score slide.svs --out qc/\n"
             "  focusq score scans/*.ome.tif --out qc/ --threshold-um 1.5\n"
             "  focusq score cells.tif --out qc/ --pixel-size 0.325 --modality fluorescence\n"
             "  focusq score stack.tif --out qc/ --slice per-tile --model my_model.safetensors\n"
             "  focusq score plate/*.tif --out qc/ --pixel-size 0.65 --na 0.45   # µm for a 20x/0.45\n\n"
             "writes per input <stem>.tiles.csv, .heatmap.tif, .mask.png, .geojson, .overlay.png,\n"
             "and one row per input in OUT/results.tsv")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="slides, z-stacks or images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    _score_options(p)

    p = _sub(subs, "batch", "score many slides in parallel (dask.distributed)",
             "  focusq batch 'scans/**/*.svs' --out qc/ --workers 4\n"
             "  focusq batch slides.txt --out qc/ --scheduler tcp://10.0.0.5:8786")
    p.add_argument("inputs", nargs="+", metavar="INPUT_GLOB|LIST",
                   help="glob patterns (quote them), files, or a .txt list with one path per line")
    p.add_argument("--out", required=True, metavar="DIR")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", metavar="ADDRESS", help="address of a running dask scheduler")
    g.add_argument("--workers", type=_nonneg_int, metavar="N", help="local worker processes (default: cores)")
    _score_options(p)

    p = _sub(subs, "train", "train a model on simulated defocus of in-focus images",
             "  focusq train --recipe default --out weights/   # reproduces the shipped fast weights\n"
             "  focusq train data/brightfield/*.svs --out my_model.safetensors --preset fast --epochs 20\n"
             "  focusq train data/ --out inc.safetensors --preset inception --seed 1\n"
             "  focusq train --preset inception --device cuda --minutes 9 --out data/models/  # the paper's recipe\n"
             "  focusq train --collection my_tiles --init default --out lab.safetensors")
    p.add_argument("data", nargs="*", metavar="DATA",
                   help="in-focus images or folders of them (default with --recipe: the project's real images)")
    p.add_argument("--out", required=True, metavar="MODEL", help="checkpoint to write (.safetensors, or a folder)")
    p.add_argument("--preset", choices=PRESETS, default="fast", help="model architecture")
    p.add_argument("--epochs", type=_nonneg_int, default=None, metavar="N", help="default: the preset's")
    p.add_argument("--recipe", default="default", choices=("default", "fluorescence"),
                   help="simulation / augmentation recipe; without DATA it also names the project's "
                        "image set (default: brightfield, fluorescence: fluorescence)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_nonneg_int, default=None, metavar="N", help="default: the preset's")
    p.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", dest="pixel_size",
                   help="pixel size of DATA without one in the metadata")
    p.add_argument("--modality", choices=("auto", "brightfield", "fluorescence"), default="auto",
                   help="auto guesses from the data (RGB on a bright background = brightfield)")
    p.add_argument("--init", metavar="MODEL", help="start from this checkpoint (fine-tuning; inception: resume)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="inception: where tiles are made and the model trains (auto: CUDA if torch sees a GPU)")
    p.add_argument("--minutes", type=_positive_float, metavar="M",
                   help="inception: time budget; the run ends with a finished checkpoint (resume with --init)")
    p.add_argument("--checkpoint-minutes", type=_positive_float, metavar="M", dest="checkpoint_minutes",
                   help="inception: write the checkpoint this often (default 3)")
    p.add_argument("--tiles-per-epoch", type=_nonneg_int, metavar="N", dest="tiles_per_epoch",
                   help="inception: tiles per epoch (default 33000, the paper's)")
    p.add_argument("--collection", metavar="COLLECTION",
                   help="fine-tune on a tile collection (focusq collect) instead of DATA; --init defaults to default")
    p.add_argument("--threshold-um", type=_positive_float, default=2.0, metavar="UM",
                   help="with --collection: real out-of-focus tiles must read above it")
    p.add_argument("--heldout", nargs="+", metavar="SLIDE",
                   help="with --collection: the slides held out to judge the result (default: a seeded third)")
    p.add_argument("--keep-worse", action="store_true",
                   help="with --collection: write the fine-tuned model even if it does worse than its start")

    p = _sub(subs, "evaluate", "measure a model's error on simulated defocus of held-out images, "
             "or on real pairs of captures (focusq pair)",
             "  focusq evaluate default data/heldout/*.tif --pixel-size 0.5\n"
             "  focusq evaluate my_model.safetensors data/ --out report.json\n"
             "  focusq evaluate default --pairs scan1/a.tif:scan2/a.tif scan1/b.tif:scan2/b.tif --na 0.75\n"
             "  focusq evaluate default --pairs-csv pairs.csv   # columns in,out")
    p.add_argument("model", metavar="MODEL", help="model name or .safetensors checkpoint")
    p.add_argument("data", nargs="*", metavar="DATA", help="in-focus images or folders of them")
    p.add_argument("--pairs", nargs="+", metavar="IN:OUT", default=None,
                   help="registered captures of one field, in focus and not: the model's reading of OUT is "
                        "checked against the physical defocus fitted from the pair")
    p.add_argument("--pairs-csv", metavar="CSV", default=None, dest="pairs_csv",
                   help="the pairs as a CSV with columns in,out (paths relative to the CSV)")
    _optics_options(p)
    p.add_argument("--out", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", dest="pixel_size")
    p.add_argument("--modality", choices=("auto", "brightfield", "fluorescence"), default="auto",
                   help="auto guesses from the data (RGB on a bright background = brightfield)")
    p.add_argument("--seed", type=int, default=0)

    p = _sub(subs, "simulate", "write a simulated defocus series of an in-focus image",
             "  focusq simulate crop.tif --z-um 0,1,2,4 --out series/\n"
             "  focusq simulate cells.png --z-um 0,0.5,1 --out series/ --pixel-size 0.3 "
             "--modality fluorescence --na 0.95\n\n"
             "writes <stem>_z<z>um.tif (same dtype, pixel size in the tags) and a .png preview per z")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--z-um", type=_z_list, required=True, metavar="Z,Z,...", help="defocus values in µm")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", dest="pixel_size")
    p.add_argument("--modality", choices=("auto", "brightfield", "fluorescence"), default="auto",
                   help="auto guesses from the data (RGB on a bright background = brightfield)")
    p.add_argument("--method", choices=("optical", "gaussian"), default="optical",
                   help="widefield PSF, or the founding paper's Gaussian blur")
    p.add_argument("--na", type=_positive_float, default=None, help="numerical aperture (default 0.75)")
    p.add_argument("--n", type=_positive_float, default=None, help="immersion refractive index (default 1.0)")
    p.add_argument("--layers", type=_layer_list, default=None, metavar="DEPTH:WEIGHT[:IMAGE],...",
                   help="thick section: layers beside IMAGE (the bulk, depth 0, weight 1), each at DEPTH µm with "
                        "WEIGHT on its optical density (fluorescence: emission), from IMAGE's other region or "
                        "from another IMAGE of the same pixel size; --z-um is then signed, from the best plane "
                        "(the OD-weighted median depth of the layers)")
    _memory_option(p)

    p = _sub(subs, "pair", "physical defocus between two registered captures of one field",
             "  focusq pair infocus.tif offset.tif\n"
             "  focusq pair a.ome.tif b.ome.tif --na 0.75 --plot ab.png --json ab.json\n"
             "  focusq pair cells.tif cells_dz.tif --pixel-size 0.325 --modality fluorescence --na 1.4 "
             "--immersion oil\n\n"
             "fits the transfer function between the captures (their cross-spectrum) with the PSF over z,\n"
             "and over NA when neither --na nor the file states it; prints z, the fit residual, and\n"
             "writes a plot. Misregistered pairs (shifted, rotated, another field) are refused.")
    p.add_argument("input", metavar="IN", help="the in-focus capture")
    p.add_argument("output", metavar="OUT", help="the out-of-focus capture of the same field, registered to IN")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", dest="pixel_size")
    p.add_argument("--modality", choices=("auto", "brightfield", "fluorescence"), default="auto",
                   help="auto guesses from the data (RGB on a bright background = brightfield)")
    p.add_argument("--reference", choices=("capture", "image"), default="capture",
                   help="capture: both taken through the objective (H = OTF(z)/OTF(0)); image: OUT was "
                        "blurred from IN as `focusq simulate` does (H = OTF(z))")
    p.add_argument("--max-shift", type=_positive_float, default=1.0, metavar="PX", dest="max_shift",
                   help="larger shifts between the captures are refused as misregistered")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="where to write the plot (default: <OUT stem>.pair.png in the current folder)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the fit as JSON")
    _optics_options(p)

    from napari_focusq.scoring.focus import MEASURES

    p = _sub(subs, "sharpest", "find the sharpest plane of a z-stack",
             "  focusq sharpest stack.tif --out best.json\n"
             "  focusq sharpest stack.ome.tif --out scores.csv --measure tenengrad")
    p.add_argument("stack", metavar="STACK")
    p.add_argument("--out", required=True, metavar="FILE", help=".json, or .csv for one row per plane")
    p.add_argument("--measure", choices=MEASURES, default="std", help="focus measure per plane")
    _memory_option(p)

    p = _sub(subs, "collect", "score slides and add chosen tiles to a tile collection (for focusq train --collection)",
             "  focusq collect slide.svs --out my_tiles --label in-focus --where 'defocus_um<0.5' --max 50\n"
             "  focusq collect bad.svs --out my_tiles --label out-of-focus --where 'defocus_um>2'\n"
             "  focusq collect pair.svs --out my_tiles --label 2.5 --tiles 3,4 3,5")
    p.add_argument("inputs", nargs="+", metavar="SLIDE")
    p.add_argument("--out", required=True, metavar="COLLECTION", help="collection folder (created if missing)")
    p.add_argument("--label", required=True, metavar="in-focus|out-of-focus|UM",
                   help="what the tiles are: in focus, really out of focus, or a known defocus in µm")
    p.add_argument("--where", metavar="COND", help="e.g. 'defocus_um<0.5' or 'defocus_um>2 and certainty>=0.8'")
    p.add_argument("--tiles", nargs="+", metavar="ROW,COL", help="only these grid tiles")
    p.add_argument("--max", type=_nonneg_int, metavar="N", help="at most N tiles per slide (a seeded random sample)")
    _score_options(p, threshold=False)

    p = _sub(subs, "demo", "make demo data from the bundled sample slide and score it",
             "  focusq demo --out demo/")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", default="default", metavar="NAME|PATH")
    return parser
