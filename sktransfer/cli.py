"""The ``sktransfer`` command line: compare strategies, extract codes, show setup.

::

    sktransfer compare DATA [--model M] [--per-class N] [--cv K] [--out DIR]
                            [--save MODEL] [--targets targets.csv [--task T]]
    sktransfer predict MODEL INPUTS... [--out preds.csv]
    sktransfer export MODEL OUT.onnx
    sktransfer extract DATA -o codes.npz [--model M] [--layer L] [--pooling P]
    sktransfer info

``DATA`` is an ImageFolder-style directory (one subfolder of images per class) or a
named dataset: ``fashion-mnist-sample`` (bundled), ``fashion-mnist`` (local IDX
files), ``digits`` (scikit-learn's 8x8 digits); ``extract`` also takes a flat folder
of images. ``compare DATA --targets targets.csv`` reads the images and their
targets from a CSV instead (a path column, one or more target columns): real
values are ranked as regression, several 0/1 columns as multi-label, one column
of labels as classification (``--task`` overrides the reading); ``predict`` then
writes values, or 0/1 label columns. ``python -m sktransfer`` is the same program.
Problems with the input end in one line on stderr and exit code 2: every argument
is checked before any data is read or any network runs (bad values, unknown model
/ weights / layer names, output paths that cannot be written, a targets CSV's
missing columns, paths or numbers), and an image that cannot be decoded is named.

Only the standard library is imported at module level: ``--help`` answers without
importing numpy, torch or scikit-learn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

NAMED_DATASETS = ("fashion-mnist-sample", "fashion-mnist", "digits")


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


class _ArgumentError(UsageError):
    """An argparse error; ``prog`` is the (sub)command it belongs to."""

    def __init__(self, message, prog):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that ``main`` reports and returns 2 for.

    argparse itself prints the whole usage, then the error, and exits.
    """

    def error(self, message):
        raise _ArgumentError(message, self.prog)


# ------------------------------------------------------------------------ data
def _subsample(X, y, per_class, seed):
    import numpy as np

    if per_class is None:
        return X, y
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        keep.append(np.sort(rng.permutation(idx)[:per_class]))
    keep = np.sort(np.concatenate(keep))
    return X[keep], y[keep]


def _check_folder_images(paths, *, decode=False):
    """Open every image up front so a bad file fails before any work.

    ``decode=False`` reads the headers (PIL's ``verify``: a PNG's checksums, but
    nothing of a JPEG's data, so a truncated JPEG passes). ``decode=True`` decodes
    every image, JPEGs at 1/8 scale (PIL draft): ``compare`` needs it, because
    its strategies record a file that fails to decode as a failed strategy, not
    an error. ``extract`` and ``predict`` decode lazily, and a file that fails
    then is an error naming it (exit code 2) all the same.
    """
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p) as img:
                if decode:
                    img.draft(None, (1, 1))  # JPEG: the smallest DCT scale
                    img.load()
                else:
                    img.verify()
        except Exception as exc:  # noqa: BLE001 - any decoding error is the user's file
            detail = " ".join(str(exc).split())
            raise UsageError(
                f"cannot read image file {str(p)!r} ({type(exc).__name__}"
                f"{': ' + detail if detail else ''}); remove it or replace it with a "
                f"valid image."
            ) from None


def load_data(data, *, per_class=None, seed=0, decode=False):
    """``DATA`` argument -> (images, labels, description).

    The image files of a folder are checked (``_check_folder_images``; decoded
    with ``decode=True``).
    """
    import numpy as np

    from .datasets import (
        FASHION_MNIST_CLASSES,
        load_fashion_mnist,
        load_fashion_mnist_sample,
        load_image_folder,
    )

    if data == "fashion-mnist-sample":
        X, y = load_fashion_mnist_sample(subset="train", return_X_y=True)
        y = np.asarray(FASHION_MNIST_CLASSES, dtype=object)[y]
        desc = "Fashion-MNIST sample (bundled)"
    elif data == "fashion-mnist":
        try:
            X, y = load_fashion_mnist(subset="train", return_X_y=True)
        except FileNotFoundError as exc:
            raise UsageError(
                str(exc).split(". ")[0] + "; see `sktransfer compare "
                "--help` or use fashion-mnist-sample."
            ) from None
        except ValueError as exc:  # a corrupt IDX file, named in the message
            raise UsageError(str(exc)) from None
        y = np.asarray(FASHION_MNIST_CLASSES, dtype=object)[y]
        desc = "Fashion-MNIST"
    elif data == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        X = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
        y = d.target
        desc = "scikit-learn digits (8x8)"
    else:
        path = Path(data)
        if not path.exists():
            raise UsageError(
                f"{data!r} is neither an existing folder nor a named dataset "
                f"({', '.join(NAMED_DATASETS)})."
            )
        if not path.is_dir():
            raise UsageError(
                f"{data!r} is a file; DATA must be a folder with one subfolder of "
                f"images per class, or one of {', '.join(NAMED_DATASETS)}."
            )
        try:
            X, y = load_image_folder(path, return_X_y=True)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        desc = f"image folder {data}"
    X, y = _subsample(X, np.asarray(y), per_class, seed)
    if X.dtype == object:
        _check_folder_images(X, decode=decode)
    if len(np.unique(y)) < 2:
        raise UsageError(f"{data!r} has a single class; at least 2 are needed.")
    return X, y, desc


def _weights(value):
    return None if value is not None and value.lower() in ("none", "random") else value


# ------------------------------------------------------------- targets CSV
TASKS = ("classification", "regression", "multilabel")


def load_targets(data, targets, task=None):
    """``DATA --targets CSV`` -> (image paths, targets, task, target names, text).

    The CSV's header names a ``path`` column (else the first column is the
    paths) and one or more target columns; a relative path is relative to the
    CSV's folder. The task is ``task``, or read from the target columns with
    ``type_of_target`` (``sktransfer.model_selection`` does the same for
    ``compare_strategies``): real values are regression (several columns:
    multi-output), several 0/1 columns multi-label, one column of labels
    (numbers or names) classification. Every problem -- no such file, no target
    column, a row of another length, an empty cell, a path that does not
    exist, a non-numeric value where numbers are needed, targets the task
    refuses -- is a ``UsageError`` naming the row and column; nothing is
    decoded here.
    """
    import csv

    folder = _targets_folder(data)
    targets = str(targets)
    csv_path = Path(targets)
    if not csv_path.is_file():
        what = "is a folder" if csv_path.is_dir() else "does not exist"
        raise UsageError(
            f"--targets {targets!r} {what}; name a CSV file with a path column and "
            f"one or more target columns."
        )
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)  # line_num: the file's line (quoted cells span)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"--targets {targets!r}: cannot read it ({exc}).") from None
    rows = [(i, row) for i, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise UsageError(f"--targets {targets!r} is empty; it needs a header row.")
    (_, header), rows = rows[0], rows[1:]
    header = [h.strip() for h in header]
    lowered = [h.lower() for h in header]
    path_col = lowered.index("path") if "path" in lowered else 0
    columns = [j for j in range(len(header)) if j != path_col]
    names = [header[j] for j in columns]
    where = f"--targets {targets!r}"
    if not columns:
        raise UsageError(
            f"{where} has no target column: besides the path column "
            f"{header[path_col]!r} it needs one or more columns of targets."
        )
    if len(set(lowered)) != len(lowered) or "" in header:
        raise UsageError(
            f"{where}: the header {header} names a column twice or leaves one "
            f"unnamed; give every column its own name."
        )
    if not rows:
        raise UsageError(f"{where} lists no images (a header row only).")
    paths, cells = [], []
    for line, row in rows:
        if len(row) != len(header):
            raise UsageError(
                f"{where}, line {line}: {len(row)} cells, but the header has "
                f"{len(header)} ({', '.join(header)})."
            )
        path = _targets_image(row[path_col].strip(), csv_path, f"{where}, line {line}")
        values = [row[j].strip() for j in columns]
        for name, value in zip(names, values, strict=True):
            if not value:
                raise UsageError(
                    f"{where}, line {line}: column {name!r} is empty; every image "
                    f"needs a target."
                )
        paths.append(str(path))
        cells.append((line, values))
    task, y = _targets_task(cells, names, task, where)
    desc = (
        f"{csv_path.name} ({', '.join(names)}) with images of {folder}"
        if len(names) <= 4
        else f"{csv_path.name} ({len(names)} target columns) with images of {folder}"
    )
    return paths, y, task, names, desc


def _targets_folder(data):
    """``DATA`` with ``--targets``: an existing folder (the images')."""
    if data in NAMED_DATASETS:
        raise UsageError(
            f"--targets lists image files; DATA must be their folder, not the named "
            f"dataset {data!r}."
        )
    folder = Path(data)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise UsageError(
            f"{data!r} {what}; with --targets, DATA is the folder of the images the "
            f"CSV lists."
        )
    return data


def _targets_image(text, csv_path, where):
    """The image file a CSV cell names (relative: to the CSV's folder)."""
    if not text:
        raise UsageError(f"{where}: the path is empty.")
    path = Path(text)
    if not path.is_absolute():
        path = csv_path.parent / path
    if not path.is_file():
        raise UsageError(
            f"{where}: image {text!r} does not exist (looked for {str(path)!r}; "
            f"relative paths are relative to the CSV's folder)."
        )
    return path


def _targets_task(cells, names, task, where):
    """``(task, y)`` of the CSV's target cells, checked as compare will."""
    import numpy as np

    from ._compare import (
        _check_indicator,
        _check_labels,
        _check_values,
        target_task,
    )

    numbers, bad = _parse_numbers(cells, names, where)
    if task is None:
        if bad is not None and len(names) == 1:
            task = "classification"  # one column of class names
        elif bad is not None:
            raise UsageError(_not_a_number(where, bad, "several target columns"))
        else:
            y = numbers[:, 0] if len(names) == 1 else numbers
            try:
                task = target_task(y)
            except ValueError:
                raise UsageError(
                    f"{where}: the target columns {names} hold integers other than "
                    f"0 and 1 (multi-output classes, which compare does not rank); "
                    f"use --task regression to rank them as values, or give one 0/1 "
                    f"column per label (multi-label)."
                ) from None
    if task == "classification" and len(names) != 1:
        raise UsageError(
            f"{where}: --task classification takes one column of labels; the "
            f"CSV has {len(names)} target columns ({', '.join(names)})."
        )
    if task != "classification" and bad is not None:
        raise UsageError(_not_a_number(where, bad, f"{task} targets"))
    try:
        if task == "classification":
            if bad is None and np.all(numbers == np.round(numbers)):
                y = numbers[:, 0].astype(np.int64)  # labels 0, 1, 2 as written
            else:
                y = np.asarray([values[0] for _, values in cells], dtype=object)
            y, _ = _check_labels(y, len(cells))
        elif task == "regression":
            values = numbers[:, 0] if len(names) == 1 else numbers
            y = _check_values(values, len(cells), names)
        else:
            y = _check_indicator(numbers, len(cells), names)
    except ValueError as exc:
        raise UsageError(f"{where} ({task}): {exc}") from None
    return task, y


def _parse_numbers(cells, names, where):
    """The cells as floats, and the first cell that is not a number.

    A number that is not finite (``nan``, ``inf``) is an error: a missing target.
    """
    import math

    import numpy as np

    out = np.empty((len(cells), len(names)))
    bad = None
    for i, (line, values) in enumerate(cells):
        for j, value in enumerate(values):
            try:
                number = float(value)
            except ValueError:
                bad = bad or (line, names[j], value)
                continue
            if not math.isfinite(number):
                raise UsageError(
                    f"{where}, line {line}: column {names[j]!r} holds {value!r}; "
                    f"every image needs a finite target (drop the row)."
                )
            out[i, j] = number
    return (None, bad) if bad else (out, None)


def _not_a_number(where, bad, what):
    line, column, value = bad
    return (
        f"{where}, line {line}: column {column!r} holds {value!r}, not a "
        f"number; {what} must be numbers (one column of class names is "
        f"classification)."
    )


def _image_extensions():
    from .datasets._base import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def collect_images(inputs):
    """Image files named in ``inputs`` or found (recursively) in its folders.

    Hidden files and folders (names starting with ``.``) and files without an image
    extension are skipped inside folders; a file named explicitly must be an image.
    Returns the paths in a stable order: inputs in the given order, each folder's
    files sorted.
    """
    extensions = tuple(_image_extensions())
    found = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise UsageError(
                f"{item!r} does not exist (expected image files or folders)."
            )
        if path.is_file():
            if path.suffix.lower() not in extensions:
                raise UsageError(
                    f"{item!r} is not an image file (extensions: "
                    f"{', '.join(extensions)})."
                )
            found.append(str(path))
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(
                os.path.join(root, f)
                for f in sorted(files)
                if not f.startswith(".") and f.lower().endswith(extensions)
            )
    if not found:
        raise UsageError(
            f"no images found in {', '.join(map(repr, inputs))} (extensions: "
            f"{', '.join(extensions)}; hidden files are skipped)."
        )
    return found


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


# ------------------------------------------------------------- argument checks
# Each runs before any data is read or any network built or loaded.
def _check_backbone(model, weights):
    """``--model`` names one backbone and ``--weights`` weights it takes.

    Checked against the loader's names (offline backbones, timm, torchvision)
    without building a network; an unknown name gets the loader's own message.
    ``weights`` is the value ``_weights`` made of ``--weights``.
    """
    import re

    from ._backbones import (
        _PRETRAINED_ALIASES,
        _SHIPPED,
        _is_path_like,
        _torchvision_names,
        _torchvision_weights,
        load_backbone,
    )

    names = [m for m in re.split(r"[,;\s]+", model) if m]
    if len(names) > 1:
        raise UsageError(
            f"--model {model!r} names {len(names)} backbones ({', '.join(names)}); "
            f"one backbone per run is supported for now: run the command once per "
            f"model."
        )
    if not names:
        raise UsageError("--model is empty; name a backbone, e.g. efficientnet_lite0.")
    is_file = weights is not None and _is_path_like(weights)
    if is_file and not Path(weights).is_file():
        raise UsageError(
            f"--weights {weights!r}: no such file (expected imagenet, none, or a "
            f".pt / .pth / .safetensors state-dict file)."
        )
    named = weights is not None and not is_file  # "imagenet", a torchvision enum
    if model.startswith("timm/"):
        import timm

        known = timm.is_model(model[len("timm/") :].split(".")[0])
    else:
        known = model in _SHIPPED or model in _torchvision_names()
    if not known:
        try:
            # A name the loader does not know fails before anything is built,
            # with the loader's own message (close matches, valid choices).
            load_backbone(model, None)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--model: {exc}") from None
        return  # the loader knows a name this check does not: let it be
    if not named:
        return
    if model in _SHIPPED or model.startswith("timm/"):
        if weights.lower() not in _PRETRAINED_ALIASES:
            raise UsageError(
                f"--weights {weights!r} is not known for {model!r}: use imagenet, "
                f"none or a state-dict file."
            )
        if model in _SHIPPED:
            try:
                _SHIPPED[model][1]()  # the shipped weights file: its package exists
            except ImportError as exc:
                raise UsageError(str(exc)) from None
        return
    try:
        _torchvision_weights(model, weights)
    except ValueError as exc:
        raise UsageError(f"--weights: {exc}") from None


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


# -------------------------------------------------------------------- commands
def cmd_compare(args):
    import inspect

    from .model_selection import compare_strategies, parse_strategies

    # Every option is checked before the data is read or a network is built.
    _check_n_jobs(args.n_jobs)
    try:
        strategies = parse_strategies(args.strategies or "auto")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.targets is None and args.task not in (None, "classification"):
        raise UsageError(
            f"--task {args.task} needs --targets targets.csv (class folders and "
            f"named datasets hold one label per image: classification)."
        )
    if args.targets is None:  # class folders: the names must be classification's
        try:
            parse_strategies(strategies, "classification")
        except ValueError as exc:
            raise UsageError(f"--strategies: {exc}") from None
    _check_output_folder("--out", args.out)
    save = Path(args.save) if args.save else None
    if save is not None:
        _check_output_file("--save", args.save)
    # Runtime options reach compare_strategies when it has such parameters.
    accepted = inspect.signature(compare_strategies).parameters
    runtime = {}
    defaults = {
        "device": "auto",
        "precision": "auto",
        "engine": "auto",
        "num_workers": "auto",
    }
    for key, value in _runtime_args(args).items():
        if key in accepted:
            if value is not None:
                runtime[key] = value
        elif value is not None and value != defaults[key]:
            raise UsageError(
                f"--{key.replace('_', '-')} is not supported by `sktransfer compare` "
                f"in this version; it applies to `extract` and `predict`."
            )
    weights = _weights(args.weights)
    _check_compare_params(
        compare_strategies,
        {
            "model": args.model,
            "cv": args.cv,
            "n_jobs": args.n_jobs,
            "random_state": args.seed,
            "input_size": args.input_size,
            "time_budget": args.time_budget,
            **runtime,
        },
    )
    _check_backbone(args.model, weights)
    _check_runtime(args, engine=False)
    if args.targets is not None:
        X, y, task, names, desc = _compare_targets(args, strategies)
    else:
        # decode=True: a strategy that fails on a file is a result, not an error
        X, y, desc = load_data(
            args.data, per_class=args.per_class, seed=args.seed, decode=True
        )
        task, names = "classification", None
    out = Path(args.out)
    print(
        f"sktransfer compare: {desc}, {len(y)} images, {_targets_text(task, y)}",
        file=sys.stderr,
        flush=True,
    )
    report = compare_strategies(
        X,
        y,
        model=args.model,
        weights=weights,
        strategies=strategies,
        task=task,
        cv=args.cv,
        n_jobs=args.n_jobs,
        random_state=args.seed,
        input_size=args.input_size,
        time_budget=args.time_budget,
        refit=save is not None,
        verbose=2 if not args.quiet else 0,
        **runtime,
    )
    out.mkdir(parents=True, exist_ok=True)
    report.info_["data"] = desc
    if names is not None:
        report.info_["target_columns"] = names
    report.to_json(out / "report.json")
    report.to_csv(out / "report.csv")
    png = out / "report.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        ax = report.plot()
        ax.figure.savefig(png, dpi=110)
    except ImportError:
        png = None
    print()
    print(report)
    print()
    written = ["report.json", "report.csv"] + (["report.png"] if png else [])
    print(f"wrote {', '.join(written)} to {out.resolve()}")
    if png:
        print(f"picture: {png.resolve()}")
    if report.best_name_ is None:
        first = next((r["status"] for r in report.results_), "no strategy ran")
        print(
            f"sktransfer compare: error: every strategy failed (e.g. {first}); "
            f"see {out / 'report.csv'}.",
            file=sys.stderr,
        )
        return 1
    if save is not None:
        from ._persistence import save as save_model

        if names is not None and task != "classification":
            # predict names its value / label columns after the CSV's columns
            _final_step(report.best_estimator_).target_names_ = list(names)
        written = save_model(report.best_estimator_, save)
        print(
            f"saved {report.best_name_} (refit on all {len(y)} images) to "
            f"{Path(written).resolve()}; use it with: sktransfer predict {written} "
            f"IMAGES..."
        )
    return 0


def _compare_targets(args, strategies):
    """``DATA --targets CSV``: images, targets, task, names, text; all checked."""
    import numpy as np

    from .model_selection import parse_strategies

    X, y, task, names, desc = load_targets(args.data, args.targets, args.task)
    try:  # the names given must serve the task the CSV poses
        parse_strategies(strategies, task)
    except ValueError as exc:
        raise UsageError(f"--strategies: {exc}") from None
    X = np.asarray(X, dtype=object)
    if args.per_class is not None:
        if task != "classification":
            raise UsageError(
                f"--per-class counts images per class; {task} targets have none "
                f"(list fewer rows in the CSV instead)."
            )
        X, y = _subsample(X, y, args.per_class, args.seed)
    _check_folder_images(X, decode=True)
    return X, y, task, names, desc


def _targets_text(task, y):
    """``"2 classes"``, ``"3 labels"``, ``"1 target"`` (the summary line's)."""
    import numpy as np

    if task == "regression":
        n = 1 if np.ndim(y) == 1 else np.shape(y)[1]
        return f"regression, {n} target{'s' * (n != 1)}"
    if task == "multilabel":
        return f"multi-label, {np.shape(y)[1]} labels"
    return f"{len(np.unique(y))} classes"


def _final_step(model):
    """The last estimator of (nested) pipelines: the one predicting."""
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline):
        model = model[-1]
    return model


def cmd_extract(args):
    import numpy as np

    from ._extractor import CNNFeatureExtractor

    # Every option is checked before the data is read or a network is built.
    # The codes go exactly to ``output``: ``-o codes`` writes ``codes.npz`` (as
    # np.savez would name it), any other name is kept as given.
    _check_output_file("-o", args.output)  # not a folder ("codes" + ".npz" would be)
    output = args.output
    if not output.lower().endswith(".npz"):
        output += ".npz"
    _check_output_file("-o", output)
    weights = _weights(args.weights)
    _check_backbone(args.model, weights)
    layer = args.layer
    if layer is not None and "," in layer:
        layer = [s.strip() for s in layer.split(",")]
    if layer is not None:
        _check_layers(args.model, layer)
    _check_runtime(args)
    paths = labels = None
    data = Path(args.data)
    if data.is_dir() and any(
        f.is_file()
        and f.suffix.lower() in _image_extensions()
        and not f.name.startswith(".")
        for f in data.iterdir()
    ):
        # A flat folder (images at its top level): no labels, every image below it.
        if args.per_class is not None:
            raise UsageError(
                f"--per-class needs class subfolders, but {args.data!r} holds images "
                f"directly."
            )
        X = paths = collect_images([args.data])
        _check_folder_images(X)
        desc = f"image folder {args.data} (no classes)"
    else:
        X, labels, desc = load_data(args.data, per_class=args.per_class, seed=args.seed)
        if isinstance(X, np.ndarray) and X.dtype == object:
            paths = [str(p) for p in X]
    pooling = None if args.pooling == "none" else args.pooling
    t0 = time.perf_counter()
    ext = CNNFeatureExtractor(
        model=args.model,
        weights=weights,
        layer=layer,
        pooling=pooling,
        input_size=args.input_size,
        batch_size=args.batch_size,
        verbose=0 if args.quiet else 1,
    )
    ext.set_params(**_runtime_params(ext, _runtime_args(args)))
    codes = ext.fit_transform(X)
    arrays = {
        "codes": codes,
        "feature_names": ext.get_feature_names_out().astype(str),
    }
    if paths is not None:
        arrays["paths"] = np.asarray(paths, dtype=str)
    if labels is not None:
        arrays["labels"] = np.asarray([str(v) for v in labels])
    with open(output, "wb") as f:  # a file object: numpy adds no suffix
        np.savez_compressed(f, **arrays)
    print(
        f"{desc}: {codes.shape[0]} images -> {codes.shape[1]} features in "
        f"{time.perf_counter() - t0:.1f} s; wrote {os.path.abspath(output)} "
        f"({', '.join(arrays)})"
    )
    return 0


def cmd_predict(args):
    import csv
    import warnings

    import numpy as np

    from ._persistence import _load

    # Every option is checked before a model is loaded or an image decoded.
    if args.out:
        _check_output_file("--out", args.out)
    _check_runtime(args)
    files = collect_images(args.inputs)
    if not Path(args.model).is_file():
        raise UsageError(
            f"model file {args.model!r} does not exist (write one with `sktransfer "
            f"compare DATA --save MODEL`)."
        )
    _check_folder_images(files)
    t0 = time.perf_counter()
    runtime = {k: v for k, v in _runtime_args(args).items() if v is not None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _load(args.model, runtime=runtime)
    for w in caught:
        print(f"sktransfer predict: warning: {w.message}", file=sys.stderr)
    _check_runtime_support(model, runtime)
    kind = _model_kind(model)
    if kind is None:
        raise UsageError(
            f"{args.model!r} holds a {type(model).__name__}, not a classifier or "
            f"a regressor."
        )
    pred, proba = _predict(model, files, args.batch_size)
    seconds = time.perf_counter() - t0
    if kind == "classification" and np.ndim(pred) == 2:
        kind = "multilabel"  # an indicator matrix: one 0/1 column per label
    header, cells, summary_lines = _prediction_table(model, kind, pred, proba)

    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        writer = csv.writer(out)
        writer.writerow(["path", *header])
        for path, row in zip(files, cells):
            writer.writerow([path, *row])
    finally:
        if args.out:
            out.close()
    summary = sys.stdout if args.out else sys.stderr
    print(
        f"predicted {len(files)} images in {seconds:.1f} s "
        f"({1000 * seconds / len(files):.0f} ms per image, model load included)",
        file=summary,
    )
    for line in summary_lines:
        print(line, file=summary)
    if args.out:
        print(f"wrote {Path(args.out).resolve()}", file=summary)
    return 0


def _model_kind(model):
    """``"classification"`` (single or multi-label), ``"regression"`` or None."""
    from sklearn.base import is_regressor

    if not hasattr(model, "predict"):
        return None
    if is_regressor(model):
        return "regression"
    return "classification" if getattr(model, "classes_", None) is not None else None


def _prediction_table(model, kind, pred, proba):
    """The CSV's columns after ``path``, each image's cells, the summary lines.

    Labels: ``label`` and a probability per class. Values: one column per
    target. Multi-label: one 0/1 column per label, then its probability. Value
    and label columns are named after the targets CSV the model was trained
    from (``target_names_``, set by ``compare --targets --save``), else
    ``value`` / ``value_<j>`` and ``label_<class>``.
    """
    import numpy as np

    if kind == "classification":
        header = ["label"]
        if proba is not None:
            header += [f"proba_{c}" for c in model.classes_]
        cells = [
            [label] + ([f"{p:.6f}" for p in proba[i]] if proba is not None else [])
            for i, label in enumerate(pred)
        ]
        values, counts = np.unique(np.asarray(pred, dtype=str), return_counts=True)
        width = max(len(v) for v in values)
        order = sorted(zip(values, counts), key=lambda t: (-t[1], t[0]))
        return header, cells, [f"  {v:<{width}}  {c}" for v, c in order]
    pred = np.asarray(pred)
    columns = pred.reshape(len(pred), -1)
    k = columns.shape[1]
    names = getattr(_final_step(model), "target_names_", None)
    if names is None or len(names) != k:
        if kind == "regression":
            names = ["value"] if pred.ndim == 1 else [f"value_{j}" for j in range(k)]
        else:
            names = [f"label_{c}" for c in model.classes_]
    names = [str(n) for n in names]
    width = max(len(n) for n in names)
    if kind == "regression":
        cells = [[f"{v:.8g}" for v in row] for row in columns.astype(float)]
        lines = [
            f"  {n:<{width}}  mean {c.mean():.4g}, min {c.min():.4g}, max {c.max():.4g}"
            for n, c in zip(names, columns.astype(float).T)
        ]
        return names, cells, lines
    width = max(width, len("(no label)"))
    with_proba = proba is not None and np.shape(proba) == columns.shape
    header = names + ([f"proba_{n}" for n in names] if with_proba else [])
    cells = [
        [str(int(v)) for v in row]
        + ([f"{p:.6f}" for p in proba[i]] if with_proba else [])
        for i, row in enumerate(columns)
    ]
    lines = [
        f"  {n:<{width}}  {int(c.sum())} image{'s' * (int(c.sum()) != 1)}"
        for n, c in zip(names, columns.T)
    ]
    none = int((columns.sum(1) == 0).sum())
    lines.append(f"  {'(no label)':<{width}}  {none} image{'s' * (none != 1)}")
    return header, cells, lines


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


def _predict(model, files, batch_size):
    """Predictions and probabilities (or None); the network runs once per image.

    Labels, values, or a 0/1 indicator matrix (multi-label).
    """
    import numpy as np
    from sklearn.pipeline import Pipeline

    from ._finetune import FineTunedClassifier

    if batch_size is not None:
        for name in model.get_params(deep=True):
            if name == "batch_size" or name.endswith("__batch_size"):
                model.set_params(**{name: batch_size})
    if isinstance(model, Pipeline) and len(model) > 1:
        features = model[:-1].transform(files)
        head = model[-1]
        labels = head.predict(features)
        proba = head.predict_proba(features) if hasattr(head, "predict_proba") else None
        return labels, proba
    if isinstance(model, FineTunedClassifier):
        proba = model.predict_proba(files)
        if model._multilabel:  # predict's rule: a label's probability above 0.5
            return (proba > 0.5).astype(np.int64), proba
        return model.classes_[np.argmax(proba, axis=1)], proba
    labels = model.predict(files)
    proba = model.predict_proba(files) if hasattr(model, "predict_proba") else None
    return labels, proba


def cmd_export(args):
    """Write a saved model as one ONNX file (``sktransfer.export_onnx``)."""
    if not Path(args.model).is_file():
        raise UsageError(
            f"model file {args.model!r} does not exist (write one with `sktransfer "
            f"compare DATA --save MODEL` or sktransfer.save)."
        )
    _check_output_file("OUT.onnx", args.out)
    from ._export import export_model_file

    try:
        print(export_model_file(args.model, args.out))
    except RuntimeError as exc:  # the export's check against the model failed
        raise UsageError(str(exc).strip().splitlines()[0]) from None
    return 0


def cmd_info(args):
    import platform

    import torch

    from . import __version__
    from ._backbones import offline_backbones
    from ._runtime import cpu_kind, resolve_policy
    from .model_selection import available_strategies

    policy = resolve_policy("auto", "auto", "auto").report()
    lines = [
        ("sktransfer", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("threads", policy["threads"]),
        ("device (auto)", policy["device"]),
        ("CPU kind", cpu_kind()),
        ("precision (auto)", policy["inference"]),
        ("cached training steps (auto)", policy["cached steps"]),
        ("memory format (auto)", policy["memory_format"]),
        ("engine (auto)", policy["engine"]),
        ("offline backbones", ", ".join(offline_backbones()) or "none"),
    ]
    for mod in ("torchvision", "timm", "sklearn", "skorch"):
        try:
            lines.insert(3, (mod, __import__(mod).__version__))
        except ImportError:
            lines.insert(3, (mod, "not installed"))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    print("strategies (the tasks they serve):")
    strategies = available_strategies()
    rows = [(n, ", ".join(s.tasks), s.description) for n, s in strategies.items()]
    name_width = max(len(r[0]) for r in rows)
    task_width = max(len(r[1]) for r in rows)
    for name, tasks, description in rows:
        print(f"  {name:<{name_width}}  {tasks:<{task_width}}  {description}")
    return 0


# ---------------------------------------------------------------------- parser
def _add_data_args(p):
    p.add_argument(
        "data",
        metavar="DATA",
        help="an ImageFolder directory (DATA/<class>/<image>) or one of "
        + ", ".join(NAMED_DATASETS),
    )
    p.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="backbone: efficientnet_lite0 (offline ImageNet weights), a torchvision "
        "name, or timm/<name> (default: %(default)s)",
    )
    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet, a local .pt/.safetensors file, or none (default: %(default)s)",
    )
    p.add_argument(
        "--per-class",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use at most N images per class (random, seeded)",
    )
    p.add_argument(
        "--input-size",
        type=_positive_int,
        default=None,
        metavar="S",
        help="resize images to SxS for the backbone (default: the weights' own size)",
    )
    p.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=0,
        help="random seed, >= 0 (default: 0)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def _add_runtime_args(p):
    g = p.add_argument_group("where and how the network runs")
    g.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda or cuda:N (default: the estimator's, auto)",
    )
    g.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="inference precision (default: auto, fp32 on every CPU)",
    )
    g.add_argument(
        "--engine",
        default=None,
        choices=["auto", "onnxruntime", "torch"],
        help="inference engine, where this sktransfer version has the choice "
        "(default: auto)",
    )
    g.add_argument(
        "--num-workers",
        type=_workers,
        default=None,
        metavar="N",
        help="worker processes decoding image files: an int or 'auto' (default: "
        "auto, one per core beyond the first for 32 or more files)",
    )


def _int_at_least(minimum):
    """argparse type: an int >= ``minimum``, else a one-line usage error."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
        return value

    return parse


_positive_int = _int_at_least(1)


def _workers(text):
    """``--num-workers``: ``auto`` or an int >= 0."""
    return "auto" if text == "auto" else _int_at_least(0)(text)


def build_parser():
    """The argparse parser of the ``sktransfer`` command."""
    from . import __version__

    parser = _Parser(
        prog="sktransfer",
        description="Transfer learning with pretrained CNNs, the scikit-learn way.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "compare",
        help="cross-validate transfer strategies on DATA and rank them",
        description="Cross-validate transfer-learning strategies (pixels baseline, CNN "
        "codes + logistic regression / SVM, earlier layer + SVM, few-shot heads, "
        "fine-tuning) on DATA; print a ranked table and write report.json, "
        "report.csv and report.png to --out.",
    )
    _add_data_args(p)
    p.add_argument(
        "--cv",
        type=int,  # >= 2: compare_strategies' own constraint, checked up front
        default=5,
        metavar="K",
        help="number of folds, >= 2 (default: %(default)s)",
    )
    p.add_argument(
        "--strategies",
        default=None,
        metavar="A,B,...",
        help="comma-separated strategy names, 'auto' (default) or 'all'; "
        "see `sktransfer info`",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="skip remaining fine-tuning strategies after this many seconds",
    )
    p.add_argument(
        "--targets",
        default=None,
        metavar="FILE.csv",
        help="images and their targets, for a DATA folder without class "
        "subfolders: a CSV with a 'path' column (else the first column; relative "
        "to the CSV's folder) and one or more target columns. Real values are "
        "ranked as regression (by R2), several 0/1 columns as multi-label (by "
        "micro-F1), one column of labels as classification",
    )
    p.add_argument(
        "--task",
        default=None,
        choices=TASKS,
        help="what the --targets columns are, instead of reading it from their "
        "values (e.g. regression for integer counts, which read as classes)",
    )
    p.add_argument("--n-jobs", type=int, default=None, help="parallel folds")
    p.add_argument(
        "--out",
        default="sktransfer-report",
        metavar="DIR",
        help="output folder (default: %(default)s)",
    )
    p.add_argument(
        "--save",
        default=None,
        metavar="MODEL",
        help="refit the best strategy on all images and save it to this file "
        "(sktransfer.save format, loads without pickle); then `sktransfer predict "
        "MODEL IMAGES...` (with --targets, its columns are named after the CSV's)",
    )
    _add_runtime_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "predict",
        help="label images with a model saved by `compare --save`",
        description="Label image files with a model written by `sktransfer compare "
        "--save` (or sktransfer.save). INPUTS are image files and/or folders, "
        "searched recursively (hidden files and non-image files are skipped). "
        "Writes CSV: path, predicted label and, when the model has predict_proba, "
        "one probability column per class; then a summary per predicted class. "
        "A regressor writes one column of values per target, a multi-label model "
        "one 0/1 column per label and its probability (named after the targets "
        "CSV's columns for models saved by `compare --targets`).",
    )
    p.add_argument("model", metavar="MODEL", help="model file")
    p.add_argument("inputs", metavar="INPUTS", nargs="+", help="images or folders")
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE.csv",
        help="write the CSV here (default: standard output, summary on stderr)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="images per forward pass (default: the model's)",
    )
    _add_runtime_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        help="write a saved model as one ONNX file",
        description="Write a model saved by `sktransfer compare --save` (or "
        "sktransfer.save) as one ONNX file that onnxruntime and numpy alone can "
        "serve: uint8 RGB images at the model's input size in, labels and "
        "probabilities (or values) out, checked against the model before it is "
        "written. See the user guide's deployment page.",
    )
    p.add_argument("model", metavar="MODEL", help="model file")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "extract",
        help="compute CNN codes of DATA and save them to an .npz file",
        description="Compute CNN codes of DATA with CNNFeatureExtractor and save "
        "them to an .npz file: codes, feature_names, paths (image files, in the "
        "order of the codes) and labels (class folder names). DATA may also be a "
        "flat folder of images (no class subfolders; searched recursively), then "
        "there are no labels.",
    )
    _add_data_args(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE.npz",
        help="where to write the codes",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="module name(s), comma-separated (default: penultimate)",
    )
    p.add_argument(
        "--pooling",
        default="avg",
        choices=["avg", "max", "avgmax", "none"],
        help="pooling of named layers (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=32)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser(
        "info",
        help="show versions, device, precision and offline backbones",
        description="Show what sktransfer would use here: versions, device and "
        "precision and inference engine 'auto' picks, backbones "
        "usable offline, available strategies.",
    )
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    """Run ``sktransfer`` / ``python -m sktransfer``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        print(f"{exc.prog}: error: {exc} (see `{exc.prog} --help`)", file=sys.stderr)
        return 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    debug = bool(os.environ.get("SKTRANSFER_DEBUG"))
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"sktransfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, OSError, ImportError, TypeError) as exc:
        if debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        print(f"sktransfer {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
