"""Reading the command line's ``DATA``: what the commands work on.

Owns the named datasets (``NAMED_DATASETS``), class folders (``load_data``),
the ``--targets`` CSV and the tasks it poses (``load_targets``, ``TASKS``),
collecting image files from files and folders (``collect_images``), the
``--per-class`` subsample, and the up-front image checks that name a file that
cannot be read before any network runs (``_check_folder_images``). Every
problem is a one-line ``UsageError``.

Only the standard library is imported at module level (``sktransfer --help``
imports no numpy, torch or scikit-learn); the rest is imported where used.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._cli_errors import UsageError

NAMED_DATASETS = ("fashion-mnist-sample", "fashion-mnist", "digits")
TASKS = ("classification", "regression", "multilabel")


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


# ------------------------------------------------------------- targets CSV
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


# ------------------------------------------------------------- image files
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
