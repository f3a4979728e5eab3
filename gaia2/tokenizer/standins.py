"""Randomly initialised stand-ins for the pretrained networks of the tokenizer's losses.

Nothing is downloaded at run time, and a fresh machine has no DINOv2 or ImageNet AlexNet. The
quickstart, the benchmarks and the tests write tiny random networks of the real classes where the real
ones would be, so the real loading code runs; the loss terms they give carry no perceptual meaning.
Every caller says so in its output.
"""

from __future__ import annotations

import os

import torch

from gaia2.tokenizer.losses import LpipsNet, lpips_backbone_cache_path


def save_random_lpips_backbone(torch_home: str, net: LpipsNet = "alex", seed: int = 0) -> str:
    """Write a random torchvision backbone for LPIPS under ``<torch_home>/hub/checkpoints/`` with the file
    name torchvision looks for; returns the file's path.

    LPIPS uses only ``features``; the classifier weights (58M for AlexNet) are saved as stride-0 views of
    one value, so the file stays small yet loads strictly into the full network.
    """
    from torchvision import models

    builders = {"alex": models.alexnet, "vgg": models.vgg16, "squeeze": models.squeezenet1_1}
    path = lpips_backbone_cache_path(net, torch_home)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = builders[net](weights=None).state_dict()
    for key in state:
        if key.startswith("classifier."):
            state[key] = torch.zeros(1).expand(state[key].shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return str(path)


def save_random_dinov2(path: str, hidden_size: int = 32, patch_size: int = 4, seed: int = 0) -> str:
    """Write a tiny random ``Dinov2Model`` (two layers, two heads) with ``save_pretrained``; returns ``path``."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=2 * hidden_size, patch_size=patch_size, image_size=8 * patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(cfg)
    model.save_pretrained(path)
    return path
