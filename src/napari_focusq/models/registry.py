"""The model architectures by name: the presets, the shipped weight files, a fresh module of each
and the input each reads (phase 1 of issue 17 moved these tables here unchanged; one table
for builder, input kind and defaults is the next step).
"""
from __future__ import annotations

#: preset name -> (builder, input kind). Input kinds: "green" (one channel of an RGB
#: brightfield tile, or the tile's intensity), "rgb01" (RGB scaled to [0, 1]).


#: preset name -> (builder, input kind). Input kinds: "green" (one channel of an RGB
#: brightfield tile, or the tile's intensity), "rgb01" (RGB scaled to [0, 1]).
PRESETS = ("fast", "inception")
_SHIPPED = {"fast": "fast.safetensors", "fast-fluorescence": "fast-fluorescence.safetensors",
            "inception": "inception.safetensors"}


def build_module(architecture: str, config: dict | None = None):
    """A fresh (untrained) torch module of a registered architecture."""
    config = dict(config or {})
    if architecture == "fast":
        from napari_focusq.models.fast import FastFocusNet

        if "hidden" in config:
            config["hidden"] = tuple(config["hidden"])
        return FastFocusNet(**config)
    if architecture == "inception":
        from napari_focusq.models.inception import InceptionFocusNet

        if "widths" in config:
            config["widths"] = tuple(config["widths"])
        return InceptionFocusNet(**config)
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {PRESETS}")


def input_kind(architecture: str, config: dict | None = None) -> str:
    if architecture == "inception":
        return "rgb01"
    return "green+blue" if (config or {}).get("blue") else "intensity"
