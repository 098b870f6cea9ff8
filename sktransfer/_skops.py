"""skops.io on sktransfer's estimators: a clear TypeError, never a dead process.

``skops.io.dump`` walks an object's ``__dict__`` and, for a type it does not
know, rebuilds pieces through their constructors. On a fitted
``CNNFeatureExtractor`` that reaches torch's and ONNX Runtime's C++ objects,
and constructing one of those aborts the interpreter (``terminate called ...
new instance has no pybind11-registered base types``): a notebook kernel dies
with everything in it. A fitted ``FineTunedClassifier`` raised a raw
``RuntimeError: Cannot directly construct TensorBase`` instead.

skops' own dispatch (``skops.io._utils._get_state``, a ``singledispatch``)
chooses how each type is stored; this registers, for the image estimators and
for the torch objects they hold, a state function that raises skops'
``UnsupportedTypeException`` (a ``TypeError``) pointing to
:func:`sktransfer.save`, which stores networks as safetensors and every
scikit-learn step through skops. Pickling is unaffected (``__getstate__`` is
not involved). The few-shot heads hold numpy arrays only and round-trip
through skops as they are.

Registered when the estimators' base module is imported, so before any of
them exists.
"""

from __future__ import annotations

__all__ = ["register_skops_dispatch"]

_HINT = (
    "skops.io cannot store {what}: it holds torch networks and inference "
    "engines, which skops has no safe format for. Use sktransfer.save(model, "
    "path) and sktransfer.load(path) instead: the same safety (no pickle; "
    "networks as safetensors, scikit-learn steps through skops), and they take "
    "pipelines mixing sktransfer and scikit-learn steps."
)


def _refuse(obj, save_context):
    from skops.io.exceptions import UnsupportedTypeException

    what = f"a {type(obj).__name__}"
    raise UnsupportedTypeException(_HINT.format(what=what))


def register_skops_dispatch(*types):
    """Make ``skops.io.dump`` refuse ``types`` (and torch's) with a clear error.

    Does nothing when skops is not installed.
    """
    try:
        from skops.io import _persist  # noqa: F401 - registers skops' own first
        from skops.io._utils import _get_state
    except ImportError:  # pragma: no cover - skops is a dependency
        return
    import torch

    for t in (*types, torch.nn.Module, torch.Tensor):
        _get_state.register(t)(_refuse)
