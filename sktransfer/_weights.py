"""Weight files: reading a state dict safely and loading it into a network.

Apart from :mod:`sktransfer._backbones` (which names and builds backbones) so
that the one safe reader (``weights_only=True`` or safetensors, finite values,
keys and shapes checked) is shared by every family and by ``sktransfer.load``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ._anatomy import find_head, set_submodule


def _read_state_dict(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist. Pass weights='imagenet' to "
            f"use the published weights, None for random initialization, or the path "
            f"of an existing state-dict file (.pt, .pth or .safetensors)."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # SafetensorError: a corrupt or foreign file
            raise ValueError(
                f"weights file {str(path)!r} is not a valid safetensors file "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
            ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError or a corrupt archive
        raise ValueError(
            f"weights file {str(path)!r} could not be loaded safely as a state dict "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Only plain "
            f"tensors are accepted (torch.load(..., weights_only=True)): arbitrary "
            f"pickled objects are refused because unpickling can run code. Save "
            f"weights with torch.save(model.state_dict(), path) or safetensors."
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        raise ValueError(
            f"weights file {str(path)!r} does not hold a state dict (a mapping of "
            f"names to tensors)."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _check_finite_state(state, source):
    """Refuse weights holding NaN or infinity: they would give NaN codes."""
    bad = [
        k
        for k, v in state.items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ValueError(
            f"weights from {source} hold NaN or infinite values in {len(bad)} "
            f"tensor(s) (e.g. {bad[:3]}); the file is corrupt or comes from a "
            f"diverged training run. Use another checkpoint."
        )


def _load_state_dict_into(module, state, source):
    own = module.state_dict()
    if list(own) != list(state) and len(own) == len(state):
        # Same tensors under other names (e.g. the lite0 package uses the original
        # TF-port names): map by position when every shape agrees.
        if all(a.shape == b.shape for a, b in zip(own.values(), state.values())):
            state = dict(zip(own, state.values()))
    # A fine-tuned backbone saved with its own head: resize the head to fit.
    head = find_head(module)
    if head is not None and f"{head}.weight" in state:
        w = state[f"{head}.weight"]
        current = module.get_submodule(head)
        if (
            isinstance(current, nn.Linear)
            and w.ndim == 2
            and w.shape != current.weight.shape
        ):
            set_submodule(
                module,
                head,
                nn.Linear(w.shape[1], w.shape[0], bias=f"{head}.bias" in state),
            )
            own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})")
        raise ValueError(
            f"weights from {source} do not fit this architecture: "
            + "; ".join(parts)
            + ". Is the file for another model?"
        )
    _check_finite_state(state, source)
    module.load_state_dict(state)


# ------------------------------------------------------------------------ the loaders
