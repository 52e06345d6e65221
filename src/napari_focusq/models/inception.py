"""The founding paper's model (Li et al., UCL 2023): InceptionV3 -> 2048 -> six FC layers -> 1.

torchvision's InceptionV3 with no downloaded weights (weights=None), the
auxiliary head off and its classifier replaced; a user may load backbone weights
from a local safetensors file (transfer learning) with :func:`load_backbone`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: The paper's training defaults.
PAPER_DEFAULTS = {"lr": 1e-5, "batch_size": 200, "epochs": 500}


class InceptionFocusNet(nn.Module):
    """(N, 3, 320, 320) float in [0, 1] -> |z| in µm."""

    fixed_front_end = False

    def __init__(self, tile_px: int = 320, widths: tuple[int, ...] = (1024, 512, 256, 128, 64)):
        super().__init__()
        from napari_focusq.io.extras import require

        # torchvision is an extra: only this preset needs it
        inception_v3 = require("torchvision.models", "inception", "the inception model preset").inception_v3
        net = inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=False)
        net.fc = nn.Identity()
        self.backbone = net
        layers, prev = [], 2048
        # Six fully connected layers: one per hidden width, then the 1-unit output.
        for w in widths:
            lin = nn.Linear(prev, w)
            # He initialisation: torch's default (variance 1/(3 fan_in)) shrinks the signal
            # ~6x per ReLU layer, so after five layers every tile gave the same output
            # (std 0.001 across tiles) and the loss barely moved in early training.
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.ReLU(inplace=True)]
            prev = w
        layers.append(nn.Linear(prev, 1))
        self.regressor = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.config = {"tile_px": tile_px, "widths": list(widths)}

    def start_at(self, z_um: float) -> None:
        """Set the output bias so an untrained net answers ``z_um`` (the training set's mean |z|)."""
        with torch.no_grad():
            self.regressor[-1].bias.fill_(float(torch.log(torch.expm1(torch.tensor(max(z_um, 1e-3))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return nn.functional.softplus(self.regressor(self.backbone(x)).squeeze(1))


def load_backbone(model: InceptionFocusNet, path: str | Path) -> list[str]:
    """Load InceptionV3 backbone weights (e.g. ImageNet) from a local .safetensors file.

    Keys may carry torchvision's names with or without a ``backbone.`` prefix; the
    classifier (``fc.*``) and auxiliary head (``AuxLogits.*``) are ignored. Returns
    the backbone keys that were not in the file.
    """
    from napari_focusq.models.checkpoint import read_tensors

    tensors = read_tensors(path)
    state = {}
    for k, v in tensors.items():
        k = k.removeprefix("backbone.")
        if k.startswith(("fc.", "AuxLogits.")):
            continue
        state[k] = v
    result = model.backbone.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{path}: not InceptionV3 backbone weights (unexpected keys such as {result.unexpected_keys[:3]})")
    return list(result.missing_keys)
