"""Data augmentation policies for fine-tuning, built from torchvision transforms.

A policy maps one image -- a float tensor ``(c, h, w)`` in ``[0, 1]`` already
resized to the network's input size -- to an augmented image of the same shape.
It runs before normalization, per sample, in the training DataLoader only (never
at validation or prediction time).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

__all__ = ["AUGMENT_NAMES", "AUGMENT_POLICIES", "make_augmentation"]

# The building blocks users may list, e.g. augment=["translate", "rotate"].
AUGMENT_NAMES = ("flip", "translate", "rotate", "crop_scale")

# Named policies. The source documents warn that flips can hurt images that are not
# left-right symmetric (digits, text), so only the named policies that say so flip.
AUGMENT_POLICIES = {
    "flip": ("flip",),
    "light": ("flip", "translate"),
    "standard": ("flip", "translate", "rotate", "crop_scale"),
}


class RandomTranslate(v2.RandomAffine):
    """``RandomAffine(degrees=0, translate=...)`` computed as an integer shift.

    torchvision draws whole-pixel shifts and warps the image with nearest
    interpolation, which for a pure translation is a shifted copy with zero
    fill. This does exactly that copy (same parameters from the same RNG draws,
    bit-identical output) at a tenth of the cost of the warp; anything but a
    plain tensor goes through torchvision's own kernel.
    """

    def __init__(self, translate):
        super().__init__(degrees=0, translate=translate)

    def transform(self, inpt, params):
        plain = type(inpt) is torch.Tensor and params["scale"] == 1.0
        if not plain or params["angle"] != 0 or any(params["shear"]):
            return super().transform(inpt, params)
        tx, ty = params["translate"]
        h, w = inpt.shape[-2:]
        out = torch.zeros_like(inpt)
        if abs(tx) < w and abs(ty) < h:
            out[..., max(ty, 0) : h + min(ty, 0), max(tx, 0) : w + min(tx, 0)] = inpt[
                ..., max(-ty, 0) : h - max(ty, 0), max(-tx, 0) : w - max(tx, 0)
            ]
        return out


def _block(name, size):
    if name == "flip":
        return v2.RandomHorizontalFlip(p=0.5)
    if name == "translate":
        return RandomTranslate(translate=(0.1, 0.1))
    if name == "rotate":
        return v2.RandomRotation(degrees=15)
    if name == "crop_scale":
        return v2.RandomResizedCrop(
            size=tuple(size), scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), antialias=True
        )
    raise ValueError(
        f"unknown augmentation {name!r}. Valid names: {list(AUGMENT_NAMES)}, or a "
        f"policy in {sorted(AUGMENT_POLICIES)}, or a callable."
    )


def make_augmentation(augment, size):
    """Build the per-image training transform for ``augment``.

    Parameters
    ----------
    augment : None, str, list of str or callable
        ``None`` (no augmentation), a policy name (``"flip"``, ``"light"``:
        flip + translate, ``"standard"``: flip + translate + rotate + crop-scale),
        a list of block names from ``("flip", "translate", "rotate",
        "crop_scale")``, or a callable taking and returning a ``(c, h, w)`` float
        tensor in ``[0, 1]`` (e.g. a torchvision ``v2.Compose``).
    size : (int, int)
        The network's input size (used by ``crop_scale``).

    Returns
    -------
    transform : callable or None
    """
    if augment is None:
        return None
    if callable(augment):
        return augment
    if isinstance(augment, str):
        if augment in AUGMENT_POLICIES:
            names = AUGMENT_POLICIES[augment]
        elif augment in AUGMENT_NAMES:
            names = (augment,)
        else:
            raise ValueError(
                f"augment={augment!r} is not a known policy. Valid choices: None, "
                f"{sorted(AUGMENT_POLICIES)}, a list of names from "
                f"{list(AUGMENT_NAMES)}, or a callable."
            )
    else:
        names = tuple(augment)
        if not names:
            return None
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"augment lists must hold names (str), got {name!r}.")
    return v2.Compose([_block(name, size) for name in names])
