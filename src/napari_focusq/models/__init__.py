"""The FocusModel wrapper and load_model (the architectures by name: :mod:`napari_focusq.models.registry`).

A FocusModel turns tiles at the working resolution into calibrated |z| in µm.
It owns the input preparation each architecture expects, so every caller (CLI,
widget, batch, benchmarks) feeds it the same raw tiles.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np

from napari_focusq import __version__
from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
from napari_focusq.models.calibration import apply_calibration
from napari_focusq.models.checkpoint import ModelFileError, load_checkpoint, save_checkpoint
from napari_focusq.models.registry import PRESETS, SHIPPED, build_module, input_kind


def choose_device():
    """CUDA, then Apple MPS, then CPU (with torch threads = the cores we may use).

    ``$FOCUSQ_DEVICE`` (cpu, cuda or mps) overrides the choice: the test suite pins cpu so
    that figures it compares are the same on a machine with a GPU.
    """
    import torch

    forced = os.environ.get("FOCUSQ_DEVICE", "").strip().lower()
    if forced and forced not in ("cpu", "cuda", "mps"):
        raise ValueError(f"FOCUSQ_DEVICE must be cpu, cuda or mps; got {forced!r}")
    if forced in ("cuda", "mps"):
        return torch.device(forced)
    if not forced and torch.cuda.is_available():
        return torch.device("cuda")
    if not forced and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    torch.set_num_threads(max(1, n))
    return torch.device("cpu")


@contextmanager
def torch_threads(change: int = 0, *, to: int | None = None):
    """Run the block with torch's thread count changed by ``change`` (at least 1), or set
    ``to`` a count, and restore the count after, whatever the block set: ``torch_threads(-2)``
    leaves two cores to decode threads; ``torch_threads()`` only restores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before + change if to is None else to))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_workers(fm) -> int:
    """Threads that run ``fm`` on whole batches side by side (scoring/pipeline.py): one on a
    GPU; on the CPU one a core of torch's budget (``torch.get_num_threads()``, which the user
    sets with OMP_NUM_THREADS or torch.set_num_threads), each on one torch thread."""
    import torch

    if str(getattr(fm, "device", "cpu")) != "cpu":
        return 1
    return max(1, torch.get_num_threads())


class FocusModel:
    """A trained (or freshly built) defocus model with its metadata and calibration.

    Parameters
    ----------
    module
        The torch module (built by :func:`~napari_focusq.models.registry.build_module`).
    meta
        Its metadata (the checkpoint's JSON): name, architecture, calibration, training...
    device
        Where it runs; default :func:`choose_device`.
    """

    def __init__(self, module, meta: dict, device=None):
        self.module = module.eval()
        self.meta = meta
        self.device = device or choose_device()
        self.module.to(self.device)

    # --- identity -------------------------------------------------------------
    @property
    def name(self) -> str:
        """The model's name (its metadata's, else its architecture's)."""
        return self.meta.get("name", self.meta.get("architecture", "model"))

    @property
    def version(self) -> str:
        """The napari-focusq version that made the model."""
        return str(self.meta.get("version", __version__))

    @property
    def label(self) -> str:
        """Name and version as results tables and overlays show them."""
        return f"{self.name} {self.version}"

    @property
    def architecture(self) -> str:
        """The registered architecture (models.registry) of the module."""
        return self.meta["architecture"]

    @property
    def modality(self) -> str:
        """The modality the model was trained for."""
        return self.meta.get("modality", "brightfield")

    @property
    def tile_px(self) -> int:
        """Tile edge the model reads, in working-resolution pixels."""
        return int(self.meta.get("tile_px", TILE_PX))

    @property
    def working_pixel_um(self) -> float:
        """The working resolution the model reads, µm per pixel."""
        return float(self.meta.get("working_pixel_um", WORKING_PIXEL_UM))

    @property
    def input_kind(self) -> str:
        """What ``prepare`` makes of raw tiles (see prepare_input)."""
        return input_kind(self.architecture, getattr(self.module, "config", None))

    @property
    def trained(self) -> bool:
        """False for a freshly built model."""
        return bool(self.meta.get("trained", False))

    # --- inference --------------------------------------------------------------
    def prepare(self, tiles: np.ndarray):
        """Raw tiles (N, H, W[, C]) of any dtype -> the tensor the module expects."""
        import torch

        return torch.from_numpy(prepare_input(tiles, self.input_kind, self.modality))

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """|z| in µm per tile (N,) before calibration, float32."""
        import torch

        if len(tiles) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            x = self.prepare(tiles).to(self.device)
            return self.module(x).float().cpu().numpy()

    def predict_with_spread(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated |z| (µm) and the ensemble's spread (µm, NaN for single-head models)."""
        import torch

        tiles = self._check_tiles(tiles)
        if not hasattr(self.module, "forward_with_spread"):
            return self.predict(tiles), np.full(len(tiles), np.nan, np.float32)
        with torch.inference_mode():
            mean, spread = self.module.forward_with_spread(self.prepare(tiles).to(self.device))
        cal = apply_calibration(mean.float().cpu().numpy(), self.meta.get("calibration"))
        return cal.astype(np.float32), spread.float().cpu().numpy()

    def _check_tiles(self, tiles) -> np.ndarray:
        tiles = np.asarray(tiles)
        if tiles.ndim not in (3, 4) or tiles.shape[1:3] != (self.tile_px, self.tile_px):
            raise ValueError(
                f"model {self.label} expects tiles of {self.tile_px}x{self.tile_px} px; got array {tiles.shape}")
        return tiles

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Calibrated |z| in µm for each tile (N, tile_px, tile_px[, C])."""
        tiles = self._check_tiles(tiles)
        return apply_calibration(self.predict_raw(tiles), self.meta.get("calibration")).astype(np.float32)

    # --- files -----------------------------------------------------------------
    def save(self, path, **extra_meta) -> Path:
        """Write the model as safetensors + JSON metadata (``extra_meta`` added to it)."""
        meta = {**self.meta, **extra_meta}
        return save_checkpoint(path, dict(self.module.state_dict()), meta)


def prepare_input(tiles: np.ndarray, kind: str, modality: str) -> np.ndarray:
    """numpy -> float32 array in the layout of ``kind`` (the kinds: :class:`~napari_focusq.models.registry.Architecture`)."""
    t = np.asarray(tiles)
    if t.ndim == 4 and t.shape[-1] == 4:
        t = t[..., :3]
    t = mask_nonfinite(t)
    if kind == "green+blue":
        # (N, 2, H, W): each channel as "intensity" would give it; a grey image (or any
        # other layout) is its own green and blue.
        if not (t.ndim == 4 and t.shape[-1] == 3 and modality == "brightfield"):
            return np.repeat(prepare_input(t, "intensity", modality)[:, None], 2, 1)
        if t.dtype == np.uint8:  # the common case, in one pass per channel
            out = np.empty((len(t), 2, *t.shape[1:3]), np.float32)
            out[:, 0], out[:, 1] = t[..., 1], t[..., 2]
            return out
        return np.stack([prepare_input(t[..., c], "intensity", modality) for c in (1, 2)], 1)
    if kind == "rgb01":
        if t.ndim == 3:
            t = np.repeat(t[..., None], 3, axis=-1)
        elif t.shape[-1] != 3:
            t = np.repeat(t.mean(-1, keepdims=True), 3, axis=-1)
        scale = _dtype_scale(t)
        return np.ascontiguousarray((t.astype(np.float32) / scale).transpose(0, 3, 1, 2))
    # "intensity": one channel on a 0..255 scale.
    t = intensity_channel(t, modality)
    if t.dtype == np.uint8 and modality != "fluorescence":
        return t.astype(np.float32)  # already on the 0..255 scale, and always finite
    x = t.astype(np.float32)
    if modality == "fluorescence":
        # Robust per-tile range so any bit depth and exposure land on the same scale.
        lo = np.percentile(x, 0.5, axis=(1, 2), keepdims=True)
        hi = np.percentile(x, 99.5, axis=(1, 2), keepdims=True)
        x = (x - lo) * (255.0 / np.maximum(hi - lo, 1e-6))
    else:
        x *= 255.0 / _dtype_scale(t)
    return np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0)


def intensity_channel(tiles: np.ndarray, modality: str) -> np.ndarray:
    """(N, H, W[, C]) -> (N, H, W), unscaled: the one channel the "intensity" input is made of.

    Brightfield RGB: green carries most of the haematoxylin/eosin/DAB contrast.
    Fluorescence: the channels' maximum, as the training images and the benchmark combine
    them (a mean would dilute the sharp channel with the diffuse ones).
    """
    t = np.asarray(tiles)
    if t.ndim == 4 and t.shape[-1] == 4:
        t = t[..., :3]
    if t.ndim == 4:
        if modality == "brightfield" and t.shape[-1] == 3:
            return t[..., 1]
        return t.max(-1) if modality == "fluorescence" else t.astype(np.float32).mean(-1)
    return t


def _dtype_scale(t: np.ndarray):
    """Full scale of the data: the dtype's for integers; for float tiles 1.0 or 255.0 *per
    tile* (shape (N, 1, ...)), from its finite pixels, so one tile cannot rescale another
    (issue 19: a single +inf pixel took a whole batch from 0.33 to 4.70 µm)."""
    if t.dtype == np.uint8:
        return 255.0
    if np.issubdtype(t.dtype, np.integer):
        return float(np.iinfo(t.dtype).max)
    if t.ndim < 3:
        fin = t[np.isfinite(t)]
        return 1.0 if fin.size == 0 or fin.max() <= 1.0 else 255.0
    peak = np.where(np.isfinite(t), t, -np.inf).reshape(len(t), -1).max(1)
    return np.where(peak <= 1.0, 1.0, 255.0).astype(np.float32).reshape((-1,) + (1,) * (t.ndim - 1))


def nonfinite_count(tiles: np.ndarray) -> np.ndarray:
    """Pixels per tile (N, H, W[, C]) with a NaN or inf in any channel (0 for integer data)."""
    t = np.asarray(tiles)
    if not np.issubdtype(t.dtype, np.floating):
        return np.zeros(len(t), np.int64)
    bad = ~np.isfinite(t)
    if t.ndim == 4:
        bad = bad.any(-1)
    return bad.reshape(len(t), -1).sum(1)


def mask_nonfinite(tiles: np.ndarray) -> np.ndarray:
    """Tiles with every NaN/inf pixel replaced by its tile's median of finite values (0 when
    none): masked, so that the model sees flat neutral areas instead of 0 or 255 spikes
    that read as sharp edges. Integer data and all-finite tiles are returned as they are."""
    t = np.asarray(tiles)
    if not np.issubdtype(t.dtype, np.floating) or t.ndim < 3:
        return t
    bad = ~np.isfinite(t)
    if not bad.any():
        return t
    out = t.copy()
    for i in np.flatnonzero(bad.reshape(len(t), -1).any(1)):
        for c in range(t.shape[-1]) if t.ndim == 4 else (None,):  # per channel: colour stays neutral
            sel = (i, Ellipsis) if c is None else (i, Ellipsis, c)
            b, v = bad[sel], t[sel]
            if b.any():
                fin = v[~b]
                out[sel][b] = np.median(fin) if fin.size else 0.0
    return out


def weights_dir() -> Path:
    return Path(str(resources.files("napari_focusq") / "weights"))


def data_models_dir() -> Path:
    """Checkpoints too large for the wheel (the trained `inception`, 49 MB): the repository's
    data/models/ ($FOCUSQ_DATA/models for an installed package)."""
    from napari_focusq.training.recipes import project_data_dir

    return project_data_dir() / "models"


def _shipped_path(name: str) -> Path:
    """The package's weights for ``name``, else data/models/'s, else the package path (missing)."""
    path = weights_dir() / SHIPPED[name]
    if not path.exists() and (data_models_dir() / SHIPPED[name]).exists():
        return data_models_dir() / SHIPPED[name]
    return path


def available_models() -> list[str]:
    """Names load_model accepts without a path: presets with shipped weights (or in data/models/)."""
    return [name for name in SHIPPED if _shipped_path(name).exists()]


def new_model(architecture: str = "fast", *, modality: str = "brightfield", config: dict | None = None,
              device=None, **meta) -> FocusModel:
    """An untrained model of a preset, ready for training."""
    module = build_module(architecture, config)
    base = {
        "name": meta.pop("name", architecture), "architecture": architecture, "arch_config": module.config,
        "modality": modality, "tile_px": module.config["tile_px"], "working_pixel_um": WORKING_PIXEL_UM,
        "input": input_kind(architecture, module.config), "version": __version__, "trained": False,
    }
    return FocusModel(module, {**base, **meta}, device=device)


def model_from_file(path) -> FocusModel:
    tensors, meta = load_checkpoint(path)
    arch = meta.get("architecture")
    if arch not in PRESETS:
        raise ModelFileError(path, f"unknown architecture {arch!r}")
    if int(meta.get("tile_px", -1)) != TILE_PX or abs(float(meta.get("working_pixel_um", -1)) - WORKING_PIXEL_UM) > 1e-6:
        raise ModelFileError(path, f"made for {meta.get('tile_px')} px tiles at {meta.get('working_pixel_um')} µm/px; "
                                   f"this version scores {TILE_PX} px at {WORKING_PIXEL_UM} µm/px")
    try:
        module = build_module(arch, meta.get("arch_config"))
    except (TypeError, ValueError, KeyError) as exc:  # arch_config the builder cannot take
        raise ModelFileError(path, f"architecture settings {meta.get('arch_config')!r} do not build a "
                                   f"{arch!r} model ({type(exc).__name__}: {exc})") from None
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # tensor shapes that do not fit the architecture
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else "")
        raise ModelFileError(path, f"weights do not fit architecture {arch!r} ({detail})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(path, f"weights do not fit architecture {arch!r} "
                                   f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return FocusModel(module, meta)


_cache: dict = {}
# One load at a time: a background preload and a scoring job asking for the same model
# share one instance instead of building it twice.
_lock = threading.RLock()


def load_model(name_or_path: str | os.PathLike | FocusModel = "default", *, modality: str = "brightfield") -> FocusModel:
    """Load a model: "default"/"fast" (shipped), "inception" (data/models/, once trained), another
    shipped name, or a checkpoint path.

    "default" picks the shipped model for ``modality``. Models from files are
    cached by path and modification time, so repeated calls are cheap.

    Parameters
    ----------
    name_or_path
        A shipped name (:data:`~napari_focusq.models.registry.SHIPPED`, or "default"), a
        ``.safetensors`` checkpoint path, or a FocusModel (returned as it is).
    modality
        Which shipped model "default" means.
    """
    if isinstance(name_or_path, FocusModel):
        return name_or_path
    name = str(name_or_path)
    if name == "default":
        name = "fast-fluorescence" if modality == "fluorescence" and "fast-fluorescence" in available_models() else "fast"
    if name in SHIPPED:
        path = _shipped_path(name)
        if not path.exists():
            raise ModelFileError(path, f"no shipped weights for {name!r} (nor {data_models_dir() / SHIPPED[name]}); "
                                       f"train them with `focusq train --preset {name.split('-')[0]}` "
                                       "and pass the file with --model")
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise ModelFileError(path, f"no such model file (known names: {', '.join(['default', *SHIPPED])})")
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    with _lock:
        if key not in _cache:
            _cache[key] = model_from_file(path)
        return _cache[key]


def preload(names=("fast", "fast-fluorescence"), also: tuple[str, ...] = ()) -> threading.Thread:
    """Import torch and load shipped models in a background (daemon) thread; returns it.

    Importing torch is most of a first ``load_model`` (1.5-4 s; the model itself ~50 ms), so
    front ends start this before the user asks for a score. ``also``: more modules to import
    there (the widget's: what napari imports on the GUI thread when the first result shows).
    Failures are left for the real load to report.
    """
    def work():
        import importlib

        try:
            import torch  # noqa: F401

            for module in also:
                importlib.import_module(module)

            for name in names:
                if name in available_models():
                    load_model(name)
        except Exception:  # noqa: BLE001 - the scoring job's own load reports it
            pass

    t = threading.Thread(target=work, name="focusq-preload", daemon=True)
    t.start()
    return t


__all__ = ["FocusModel", "load_model", "preload", "new_model", "available_models", "build_module", "ModelFileError",
           "save_checkpoint", "load_checkpoint", "choose_device", "prepare_input"]
