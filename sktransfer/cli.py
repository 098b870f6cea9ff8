"""The ``sktransfer`` command line: compare strategies, extract codes, show setup.

::

    sktransfer compare DATA [--model M[,M2...]] [--per-class N] [--cv K] [--out DIR]
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

Only the standard library is imported at module level, here and in the private
modules the command line is split into (``_cli_errors``: ``UsageError``;
``_cli_data``: reading ``DATA``, the ``--targets`` CSV and image files;
``_cli_checks``: the up-front checks of the options; ``_cli_predict``: a loaded
model's predictions as a table): ``--help`` answers without importing numpy,
torch or scikit-learn. This module holds the parser, ``main`` and the commands.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ._cli_checks import (
    _check_backbone,
    _check_compare_params,
    _check_layers,
    _check_n_jobs,
    _check_output_file,
    _check_output_folder,
    _check_runtime,
    _check_runtime_support,
    _model_names,
    _runtime_args,
    _runtime_params,
    _weights,
)

# The commands call the DATA readers through this module's names (tests
# replace them here to see that every option is checked before any data).
from ._cli_data import (
    NAMED_DATASETS,
    TASKS,
    _check_folder_images,
    _image_extensions,
    _subsample,
    collect_images,
    load_data,
    load_targets,
)
from ._cli_errors import UsageError
from ._cli_predict import _final_step, _model_kind, _predict, _prediction_table

__all__ = ["main"]


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
    models = _model_names(args.model)  # --model a,b: every strategy on each
    _check_compare_params(
        compare_strategies,
        {
            "model": models,
            "cv": args.cv,
            "n_jobs": args.n_jobs,
            "random_state": args.seed,
            "input_size": args.input_size,
            "time_budget": args.time_budget,
            **runtime,
        },
    )
    for name in models:
        _check_backbone(name, weights)
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
        model=models if len(models) > 1 else models[0],
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
        "name, or timm/<name> (default: %(default)s); compare takes several, "
        "comma-separated (efficientnet_lite0,efficientnet_lite1), and ranks every "
        "strategy on each",
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
        help="resize images to SxS for the backbone (default: the weights' own "
        "size; compare: each strategy's own, S applies to all)",
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
