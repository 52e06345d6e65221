"""The model architectures by name, in one table: how each is built, what input it reads,
its training defaults and the shipped weights; the CLI's choices, ``TrainConfig``'s check
and the training panel read the same table.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    Attributes
    ----------
    name
        The preset name (``focusq train --preset``, the checkpoint's ``architecture``).
    builder
        ``"module:Class"`` of its torch module, imported only when one is built.
    input_kind
        ``arch_config -> kind``: what :func:`napari_focusq.models.prepare_input` makes of
        raw tiles for it: "intensity" (one channel on a 0..255 scale), "green+blue" (the
        green and blue channels of a brightfield tile, each as "intensity"), "rgb01" (RGB
        scaled to [0, 1]).
    training
        Defaults of a training run: ``epochs``, ``lr``, ``batch_size``.
    tuple_keys
        Settings a checkpoint's JSON stores as lists that the module takes as tuples.
    """

    name: str
    builder: str
    input_kind: Callable[[dict], str]
    training: dict
    tuple_keys: tuple[str, ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict)

    def build(self, config: dict | None = None):
        """A fresh (untrained) torch module with ``config`` (a checkpoint's ``arch_config``)."""
        config = dict(config or {})
        for key in self.tuple_keys:
            if key in config:
                config[key] = tuple(config[key])
        module, cls = self.builder.split(":")
        return getattr(importlib.import_module(module), cls)(**config)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("fast", "napari_focusq.models.fast:FastFocusNet",
                 lambda cfg: "green+blue" if cfg.get("blue") else "intensity",
                 {"epochs": 200, "lr": 2e-3, "batch_size": 256}, tuple_keys=("hidden",),
                 description="laptop-CPU model (default)"),
    Architecture("inception", "napari_focusq.models.inception:InceptionFocusNet",
                 lambda cfg: "rgb01",
                 {"epochs": 500, "lr": 1e-5, "batch_size": 200},  # the founding paper's
                 tuple_keys=("widths",), description="the founding paper's InceptionV3 (needs torchvision)"),
)}
#: The architectures' names: ``focusq train --preset``'s choices, TrainConfig's check.
PRESETS = tuple(ARCHITECTURES)
#: Shipped model names (``load_model``, ``--model``) -> their weight file, in the package's
#: weights/ or, too large for the wheel, in data/models/.
SHIPPED = {"fast": "fast.safetensors", "fast-fluorescence": "fast-fluorescence.safetensors",
           "inception": "inception.safetensors"}
_SHIPPED = SHIPPED  # the name phase 1 used


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; ValueError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {name!r}; expected one of {PRESETS}") from None


def build_module(architecture_name: str, config: dict | None = None):
    """A fresh (untrained) torch module of a registered architecture."""
    return architecture(architecture_name).build(config)


def input_kind(architecture_name: str, config: dict | None = None) -> str:
    """The input kind of a registered architecture with ``config`` (see :class:`Architecture`)."""
    arch = ARCHITECTURES.get(architecture_name, ARCHITECTURES["fast"])  # as before: unknown reads as fast
    return arch.input_kind(config or {})
