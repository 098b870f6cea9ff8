"""The command line's up-front checks of its options, and their translation.

Each check runs before any data is read or any network built or loaded:
backbone and weights names (``_check_backbone``), layer names
(``_check_layers``), the device / precision / engine (``_check_runtime``,
``_check_runtime_support`` for a loaded model), output files and folders
(``_check_output_file``, ``_check_output_folder``), ``--n-jobs``, and
compare_strategies' own parameter constraints (``_check_compare_params``). It
also turns options into estimator parameters (``_weights``, ``_runtime_args``,
``_runtime_params``). Every problem is a one-line ``UsageError``.

Only the standard library is imported at module level (``sktransfer --help``
imports no numpy, torch or scikit-learn); the rest is imported where used.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._cli_errors import UsageError


def _weights(value):
    return None if value is not None and value.lower() in ("none", "random") else value


def _runtime_args(args):
    """--device / --precision / --engine / --num-workers as estimator parameters."""
    return {
        "device": args.device,
        "precision": args.precision,
        "engine": args.engine,
        "num_workers": args.num_workers,
    }


def _runtime_params(estimator, runtime):
    """The runtime options ``estimator`` has parameters for.

    ``engine`` is only passed when the estimator has such a parameter; asking for a
    specific engine from an estimator without one is an error.
    """
    params = estimator.get_params(deep=False)
    out = {k: v for k, v in runtime.items() if k in params and v is not None}
    engine = runtime.get("engine")
    if engine not in (None, "auto") and "engine" not in params:
        raise UsageError(
            f"--engine {engine} is not supported by this sktransfer version "
            f"({type(estimator).__name__} has no engine parameter); use --engine auto."
        )
    return out


def _check_n_jobs(n_jobs):
    if n_jobs == 0:
        raise UsageError(
            "--n-jobs 0 has no meaning; use a positive number of parallel jobs, or "
            "-1 for all cores (as in scikit-learn)."
        )


def _model_names(model):
    """``--model a,b`` (commas, semicolons or spaces) as a list of names."""
    import re

    names = [m for m in re.split(r"[,;\s]+", model) if m]
    if not names:
        raise UsageError("--model is empty; name a backbone, e.g. efficientnet_lite0.")
    return names


def _check_backbone(model, weights):
    """``--model`` names one backbone and ``--weights`` weights it takes.

    Checked by the backbone family that claims the name (``check_spec``: offline
    backbones, ``timm/`` and ``hf-hub:`` names, torchvision) without building a
    network; an unknown name gets the loader's own message. ``weights`` is the
    value ``_weights`` made of ``--weights``. ``compare`` takes several
    (``_model_names``) and checks each one.
    """
    from ._backbones import _SHIPPED, _is_path_like, check_spec

    names = _model_names(model)
    if len(names) > 1:
        raise UsageError(
            f"--model {model!r} names {len(names)} backbones ({', '.join(names)}); "
            f"this command takes one (`sktransfer compare` compares several): run "
            f"it once per model."
        )
    is_file = weights is not None and _is_path_like(weights)
    if is_file and not Path(weights).is_file():
        raise UsageError(
            f"--weights {weights!r}: no such file (expected imagenet, none, or a "
            f".pt / .pth / .safetensors state-dict file)."
        )
    try:
        check_spec(model, weights)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--model {model!r} / --weights {weights!r}: {exc}") from None
    if model in _SHIPPED and weights is not None and not is_file:
        try:
            _SHIPPED[model][1]()  # the shipped weights file: its package exists
        except ImportError as exc:
            raise UsageError(str(exc)) from None


def _check_layers(model, layer):
    """``--layer`` names modules of the backbone (its architecture, no weights)."""
    from ._backbones import load_backbone
    from ._extractor import _resolve_layers

    net, _ = load_backbone(model, None)
    try:
        _resolve_layers(net, layer)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--layer: {exc}") from None


def _check_runtime(args, engine=True):
    """``--device`` / ``--precision`` / ``--engine``: valid here (e.g. CUDA present)."""
    import warnings

    from ._runtime import resolve_device, resolve_policy

    try:
        device = resolve_device(args.device or "auto")
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    try:
        with warnings.catch_warnings():  # a warning comes again from the real run
            warnings.simplefilter("ignore")
            resolve_policy(
                device,
                args.precision or "auto",
                (args.engine or "auto") if engine else "auto",
            )
    except ValueError as exc:
        raise UsageError(f"--precision / --engine: {exc}") from None


def _check_output_file(flag, path):
    """A file the command writes: not a folder; its folder exists, writable."""
    if not str(path).strip():
        raise UsageError(f"{flag} is empty; name the file to write.")
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise UsageError(f"{flag} {str(path)!r} is a folder; name a file to write.")
    folder = p.resolve().parent
    if not folder.is_dir():
        raise UsageError(
            f"{flag} {str(path)!r}: folder {str(folder)!r} does not exist."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {str(path)!r}: folder {str(folder)!r} is not writable."
        )
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{flag} {str(path)!r}: the file exists and is not writable.")


def _check_output_folder(flag, path):
    """A folder the command creates (with its parents) or writes into."""
    if not str(path).strip():
        raise UsageError(f"{flag} is empty; name the folder to write.")
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a file, not a folder.")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(
            f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {str(path)!r}: folder {str(existing)!r} is not writable."
        )


# compare_strategies' parameters -> the options that set them
_COMPARE_OPTIONS = {
    "model": "--model",
    "strategies": "--strategies",
    "cv": "--cv",
    "n_jobs": "--n-jobs",
    "random_state": "--seed",
    "input_size": "--input-size",
    "time_budget": "--time-budget",
    "device": "--device",
    "precision": "--precision",
}


def _check_compare_params(compare_strategies, params):
    """``params`` against compare_strategies' own constraints, before any work.

    Reuses the constraints its ``validate_params`` decorator holds (sklearn's
    wrapper keeps them in its closure), so the command line accepts exactly what
    the function does. Without them (another scikit-learn), compare_strategies
    still checks its parameters itself, later.
    """
    import inspect

    from sklearn.utils._param_validation import (
        InvalidParameterError,
        validate_parameter_constraints,
    )

    try:
        constraints = inspect.getclosurevars(compare_strategies).nonlocals.get(
            "parameter_constraints"
        )
    except (TypeError, ValueError):  # pragma: no cover - not a closure any more
        constraints = None
    if not isinstance(constraints, dict):  # pragma: no cover
        return
    for name, value in params.items():
        if name not in constraints:
            continue
        try:
            validate_parameter_constraints(
                {name: constraints[name]}, {name: value}, "compare_strategies"
            )
        except InvalidParameterError as exc:
            option = _COMPARE_OPTIONS.get(name, name)
            raise UsageError(f"{option} {value!r}: {exc}") from None


def _check_runtime_support(model, runtime):
    """Refuse --engine X when no estimator in the model has an engine parameter."""
    engine = runtime.get("engine")
    if engine in (None, "auto"):
        return
    params = model.get_params(deep=True)
    if not any(k == "engine" or k.endswith("__engine") for k in params):
        raise UsageError(
            f"--engine {engine} is not supported by this sktransfer version (no "
            f"estimator in the model has an engine parameter); use --engine auto."
        )
