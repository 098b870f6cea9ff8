"""The ``sktransfer`` command line: compare strategies, extract codes, show setup.

::

    sktransfer compare DATA [--model M] [--per-class N] [--cv K] [--out DIR]
    sktransfer extract DATA -o codes.npz [--model M] [--layer L] [--pooling P]
    sktransfer info

``DATA`` is an ImageFolder-style directory (one subfolder of images per class) or a
named dataset: ``fashion-mnist-sample`` (bundled), ``fashion-mnist`` (local IDX
files), ``digits`` (scikit-learn's 8x8 digits). ``python -m sktransfer`` is the
same program. Problems with the input end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

NAMED_DATASETS = ("fashion-mnist-sample", "fashion-mnist", "digits")


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


# ------------------------------------------------------------------------ data
def _subsample(X, y, per_class, seed):
    if per_class is None:
        return X, y
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        keep.append(np.sort(rng.permutation(idx)[:per_class]))
    keep = np.sort(np.concatenate(keep))
    return X[keep], y[keep]


def _check_folder_images(paths):
    """Open every image header up front so a bad file fails before any work."""
    from PIL import Image

    for p in paths:
        try:
            with Image.open(p) as img:
                img.verify()
        except Exception as exc:  # noqa: BLE001 - any decoding error is the user's file
            raise UsageError(
                f"cannot read image file {p!r} ({type(exc).__name__}); remove it or "
                f"replace it with a valid image."
            ) from None


def load_data(data, *, per_class=None, seed=0):
    """``DATA`` argument -> (images, labels, description)."""
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
        _check_folder_images(X)
    if len(np.unique(y)) < 2:
        raise UsageError(f"{data!r} has a single class; at least 2 are needed.")
    return X, y, desc


def _weights(value):
    return None if value is not None and value.lower() in ("none", "random") else value


# -------------------------------------------------------------------- commands
def cmd_compare(args):
    from ._compare import STRATEGIES, compare_strategies

    strategies = "auto"
    if args.strategies:
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        if strategies in (["auto"], ["all"]):
            strategies = strategies[0]
        else:
            unknown = [s for s in strategies if s not in STRATEGIES]
            if unknown:
                raise UsageError(
                    f"unknown strategy {', '.join(unknown)}; choose from "
                    f"{', '.join(STRATEGIES)} (or auto, all)."
                )
    X, y, desc = load_data(args.data, per_class=args.per_class, seed=args.seed)
    out = Path(args.out)
    print(
        f"sktransfer compare: {desc}, {len(y)} images, {len(np.unique(y))} classes",
        file=sys.stderr,
        flush=True,
    )
    report = compare_strategies(
        X,
        y,
        model=args.model,
        weights=_weights(args.weights),
        strategies=strategies,
        cv=args.cv,
        n_jobs=args.n_jobs,
        random_state=args.seed,
        input_size=args.input_size,
        time_budget=args.time_budget,
        refit=False,
        verbose=2 if not args.quiet else 0,
    )
    out.mkdir(parents=True, exist_ok=True)
    report.info_["data"] = desc
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
    return 0


def cmd_extract(args):
    from ._extractor import CNNFeatureExtractor

    X, y, desc = load_data(args.data, per_class=args.per_class, seed=args.seed)
    layer = args.layer
    if layer is not None and "," in layer:
        layer = [s.strip() for s in layer.split(",")]
    pooling = None if args.pooling == "none" else args.pooling
    t0 = time.perf_counter()
    ext = CNNFeatureExtractor(
        model=args.model,
        weights=_weights(args.weights),
        layer=layer,
        pooling=pooling,
        input_size=args.input_size,
        batch_size=args.batch_size,
        verbose=0 if args.quiet else 1,
    )
    codes = ext.fit_transform(X)
    np.savez_compressed(
        args.output,
        codes=codes,
        labels=np.asarray([str(v) for v in y]),
        feature_names=ext.get_feature_names_out().astype(str),
    )
    print(
        f"{desc}: {codes.shape[0]} images -> {codes.shape[1]} features in "
        f"{time.perf_counter() - t0:.1f} s; wrote {args.output} (codes, labels, "
        f"feature_names)"
    )
    return 0


def cmd_info(args):
    import platform

    import torch

    from . import __version__
    from ._backbones import offline_backbones
    from ._runtime import cpu_has_fast_bf16, resolve_device, resolve_precision
    from .model_selection import available_strategies

    device = resolve_device("auto")
    autocast = resolve_precision("auto", device)
    precision = {None: "fp32"}.get(autocast, str(autocast).replace("torch.", ""))
    traced = device.type == "cpu" and autocast is None
    lines = [
        ("sktransfer", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("threads", str(torch.get_num_threads())),
        ("device (auto)", str(device)),
        ("precision (auto)", precision),
        ("CPU fast bf16 (AMX/AVX512-bf16)", "yes" if cpu_has_fast_bf16() else "no"),
        (
            "traced CPU path",
            "yes (fp32 TorchScript, BatchNorm folded)" if traced else "no",
        ),
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
    print("strategies:")
    for name, strategy in available_strategies().items():
        print(f"  {name:<15} {strategy.description}")
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
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def build_parser():
    """The argparse parser of the ``sktransfer`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
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
        type=_positive_int,
        default=5,
        metavar="K",
        help="number of folds (default: %(default)s)",
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
    p.add_argument("--n-jobs", type=int, default=None, help="parallel folds")
    p.add_argument(
        "--out",
        default="sktransfer-report",
        metavar="DIR",
        help="output folder (default: %(default)s)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "extract",
        help="compute CNN codes of DATA and save them to an .npz file",
        description="Compute CNN codes of DATA with CNNFeatureExtractor and save "
        "codes, labels and feature_names to an .npz file.",
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
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser(
        "info",
        help="show versions, device, precision and offline backbones",
        description="Show what sktransfer would use here: versions, device and "
        "precision 'auto' picks, whether the traced CPU path is used, backbones "
        "usable offline, available strategies.",
    )
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    """Run ``sktransfer`` / ``python -m sktransfer``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
