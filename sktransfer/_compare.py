"""compare_strategies: measure which transfer strategy wins on the user's data.

The source documents give a rule of thumb (small / large data x similar / dissimilar
to ImageNet -> CNN codes + linear classifier, earlier layer + SVM, fine-tune the top,
fine-tune all). Here the rule only decides which strategies "auto" tries and in what
order; cross-validation on the user's own images decides the winner.

The targets decide the task (``target_task``, with scikit-learn's
``type_of_target``): single labels are ranked by accuracy on stratified folds,
real values (one or several per image) by R² on KFold, multi-label 0/1
indicators by micro-F1 on KFold; each task has its own strategies.

The registry and the parsing of names live in ``_strategies.py`` (public through
:mod:`sktransfer.model_selection`). This module is the driver, in named steps:

0. ``target_task``: which task the targets pose (or the caller's ``task``);
1. ``_check_data``: images and targets (labels: one per image, none missing;
   values: finite numbers; indicators: 0/1 columns);
2. ``_make_splits``: the folds every strategy shares;
3. ``_SharedInputs``: what strategies consume, computed once per run -- codes per
   ``(layer, pooling)``, pixels -- the one cache of a run;
4. ``_cross_validate``: one strategy on the shared folds, one ``_Run``;
5. ``_run_info`` and ``_Run.refit``: the report's metadata and the winner.

Codes strategies get the codes of all images, extracted once: the extractor is not
fitted on labels, so sharing it across folds leaks nothing. ``"finetune"``
strategies take the images themselves and are skipped once ``time_budget`` is spent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold, check_cv, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_params,
)
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array
from threadpoolctl import threadpool_limits
from torch import nn

from ._backbones import load_backbone, model_display_name
from ._extractor import CNNFeatureExtractor
from ._images import check_images
from ._labels import check_no_missing_labels
from ._report import StrategyReport, settings_text
from ._runtime import PRECISIONS, library_versions, resolve_policy
from ._strategies import (
    CLASSIFICATION,
    EARLIER,
    MULTILABEL,
    PENULTIMATE,
    REGRESSION,
    STRATEGIES,
    TASK_SCORING,
    TASKS,
    PixelFeatures,
    StrategyContext,
    earlier_layer,
    resolve_strategies,
)

__all__ = ["StrategyReport", "compare_strategies"]


def _log(verbose, msg):
    if verbose:
        print(msg, file=sys.stderr, flush=True)


@validate_params(
    {
        # one backbone (a name or a module), or a list of them
        "model": [str, nn.Module, list, tuple],
        "weights": "no_validation",  # checked by the backbone loader
        "strategies": [str, list, tuple],
        "task": [StrOptions({"auto", *TASKS})],
        "cv": ["cv_object"],
        "scoring": [str, callable, None],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "time_budget": [Interval(Real, 0, None, closed="left"), None],
        "refit": ["boolean"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def compare_strategies(
    X,
    y,
    *,
    model="efficientnet_lite0",
    weights="imagenet",
    strategies="auto",
    task="auto",
    cv=5,
    scoring=None,
    n_jobs=None,
    random_state=None,
    input_size=None,
    device="auto",
    precision="auto",
    time_budget=None,
    refit=True,
    verbose=0,
):
    """Cross-validate transfer-learning strategies on your images; rank them.

    Which works best -- CNN codes + a linear classifier, an earlier layer + an SVM,
    a few-shot head, fine-tuning -- depends on how much data you have and how much
    it resembles ImageNet. This measures it: every strategy is scored on the same
    folds, and the winner is refit on all data.

    The targets set the task, read with scikit-learn's ``type_of_target``
    (``task`` overrides it), and each task has its strategies and metric:

    - ``"classification"``, one label per image (``"binary"`` / ``"multiclass"``
      targets): codes + logistic regression / SVM, few-shot heads,
      ``FineTunedClassifier``; accuracy on stratified folds;
    - ``"regression"``, real values (``"continuous"``, one or several columns):
      codes + RidgeCV / SVR / kNN, earlier-layer codes + RidgeCV,
      ``FineTunedRegressor``; R² on KFold;
    - ``"multilabel"``, a 0/1 indicator matrix (``"multilabel-indicator"``):
      codes and earlier-layer codes + one-vs-rest logistic regression,
      ``FineTunedClassifier`` on the indicator; micro-F1 on KFold.

    Each task has its pixel baseline (``pixels_logreg``, ``pixels_ridge``,
    ``pixels_ovr``: a linear model on resized grayscale pixels).

    Parameters
    ----------
    X : images
        Anything :class:`~sktransfer.CNNFeatureExtractor` takes: arrays
        ``(n, h, w[, c])``, lists of PIL images or arrays, lists of file paths.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Class labels of any type; real values (one column per target); or a 0/1
        indicator matrix, one column per label.
    model : backbone spec or list of them, default="efficientnet_lite0"
        As in :class:`~sktransfer.CNNFeatureExtractor`; a list (e.g.
        ``["efficientnet_lite0", "efficientnet_lite1"]``) compares every
        strategy on every backbone in one ranked report (a row per strategy and
        backbone, the backbone in its column; the pixel baseline, which uses
        none, once). Each backbone is loaded before any other work: an unknown
        name is a ``ValueError`` naming it.
    weights : str, path or None, default="imagenet"
        As in :class:`~sktransfer.CNNFeatureExtractor`, for every backbone.
    strategies : "auto", "all", str or list of str, default="auto"
        Names from ``sktransfer.model_selection.STRATEGIES`` (a
        comma-separated string works too); ``"auto"`` picks by task and data
        size (:func:`~sktransfer.model_selection.auto_strategies`), ``"all"``
        is every strategy of the task. Parsed by
        :func:`~sktransfer.model_selection.resolve_strategies`; a name that
        does not serve the task is a ``ValueError`` before any work.
    task : {"auto", "classification", "regression", "multilabel"}, default="auto"
        ``"auto"`` reads it from ``y`` (above). Pass ``"regression"`` for
        integer values that ``type_of_target`` reads as classes (counts,
        ages in years).
    cv : int or cross-validation splitter, default=5
        For labels an int means ``StratifiedKFold(cv, shuffle=True)`` (reduced,
        with a note, when the smallest class has fewer images); for values and
        multi-label indicators ``KFold(cv, shuffle=True)``. The same folds serve
        every strategy.
    scoring : str or callable, default=None
        A scikit-learn scorer (greater is better); ``None`` is the task's:
        ``"accuracy"``, ``"r2"`` or ``"f1_micro"``.
    n_jobs : int, default=None
        Parallel folds in ``cross_validate``.
    random_state : int, default=None
        Seeds the folds and the strategies' estimators.
    input_size : int, default=None
        Image size for every strategy. ``None``: each strategy runs at its own
        default size -- codes and ``finetune_defaults`` at the weights' own
        (224 px for EfficientNet-Lite0), the other fine-tuning strategies at
        96 px on a CPU (``finetune_input_size``). Smaller is faster; the
        report's ``input_size`` column says the size each row used.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where the networks run (extraction and fine-tuning).
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        As in :class:`~sktransfer.CNNFeatureExtractor`; ``"auto"`` is fp32 on a
        CPU. The report records the device and precision used.
    time_budget : float, default=None
        Seconds; once exceeded, remaining fine-tuning strategies are skipped (the
        report says so). Cheap strategies always run.
    refit : bool, default=True
        Refit the winner on all data as ``best_estimator_``.
    verbose : int, default=0
        0 prints nothing; 1 prints progress on stderr; 2 adds extraction
        progress bars.

    Returns
    -------
    report : StrategyReport
        Ranked table with per-fold scores, ``best_name_``, ``best_estimator_``,
        ``to_frame()``, ``plot()``, ``to_json()``. ``info_`` records the task
        and the metric ranked by (``task_`` and ``scoring_`` too), the device,
        precision, library versions and seeds.

    Notes
    -----
    Codes are extracted once per ``(backbone, layer, pooling)`` on all images and
    every codes-based strategy and fold reuses them: the extractor is not fitted
    on labels, so sharing it across folds leaks nothing.

    Each row records its input size, its settings (the estimator's parameters
    that differ from its defaults) and ``time``, what one fold costs on its
    own (fit + predict, plus the codes' extraction for codes strategies), so
    accuracy can be weighed against cost. ``finetune_defaults`` is
    ``FineTunedClassifier()`` with its defaults (settings ``"defaults"``);
    ``"auto"`` includes it up to 500 images per class.

    Examples
    --------
    >>> from sktransfer import compare_strategies
    >>> from sktransfer.datasets import load_fashion_mnist_sample
    >>> X, y = load_fashion_mnist_sample(return_X_y=True)
    >>> report = compare_strategies(X, y, cv=5)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    classification: 5-fold CV accuracy on 1000 images, 10 classes; backbone ...
    rank  strategy           score           size  time s  settings
    1     finetune_defaults  ...
    >>> report.best_estimator_.predict(X[:3])  # doctest: +SKIP
    array([9, 0, 0])
    """
    t0 = time.perf_counter()
    models = _check_backbones(model, weights)
    task = target_task(y, task)
    images, Xi, y, targets = _check_data(X, y, task)
    scoring = TASK_SCORING[task] if scoring is None else scoring
    names = resolve_strategies(strategies, len(y), targets.n_classes, task)
    splits = _make_splits(cv, y, random_state, verbose, task)
    ctx = StrategyContext(
        model=models[0],
        weights=weights,
        input_size=input_size,
        random_state=random_state,
        n_samples=len(y),
        n_classes=targets.n_classes,
        device=device,
        precision=precision,
        task=task,
        n_outputs=targets.n_outputs,
    )
    runtime = _resolve_runtime(ctx)  # a bad device / precision fails here, early
    contexts = [dataclasses.replace(ctx, model=m) for m in models]
    inputs = _SharedInputs(Xi, images, contexts, verbose)
    pairs = _pairs(names, len(models))
    _log(
        verbose,
        f"comparing {len(names)} {task} strategies"
        + (f" x {len(models)} backbones" if len(models) > 1 else "")
        + f" on {len(y)} images, {targets.text}, {len(splits)}-fold CV "
        f"({_scoring_name(scoring)})",
    )
    runs = []
    for i, (name, b) in enumerate(pairs, 1):
        strat = STRATEGIES[name]
        backbone = inputs.backbone_name(strat, b)
        on = f" ({backbone})" if len(models) > 1 and backbone else ""
        prefix = f"[{i}/{len(pairs)}] {name}{on}"
        spent = time.perf_counter() - t0
        if strat.kind == "finetune" and time_budget is not None and spent > time_budget:
            status = f"skipped (time budget {time_budget:g} s spent)"
            runs.append(_Run.not_run(strat, status, backbone))
            _log(
                verbose,
                f"{prefix}: skipped, time budget of {time_budget:g} s exceeded "
                f"({spent:.0f} s)",
            )
            continue
        _log(verbose, f"{prefix}: {strat.description} ...")
        runs.append(
            _cross_validate(strat, contexts[b], inputs, b, y, splits, scoring, n_jobs)
        )

    info = _run_info(
        ctx, models, runtime, inputs, splits, scoring, strategies, names, runs
    )
    report = StrategyReport([run.row for run in runs], info)
    if refit and report.best_name_ is not None:
        best = next(run for run in runs if run.row is report.results_[0])
        on = f" on {report.best_backbone_}" if report.best_backbone_ else ""
        _log(verbose, f"refitting {report.best_name_}{on} on all {len(y)} images ...")
        report.best_estimator_ = best.refit(y)
    info["total_time"] = time.perf_counter() - t0
    return report


# ------------------------------------------------------------------ the steps
def target_task(y, task="auto"):
    """The task targets ``y`` pose: ``"classification"``, ``"regression"`` or
    ``"multilabel"`` (``task`` itself unless ``"auto"``).

    Read with scikit-learn's ``type_of_target``: ``"continuous"`` and
    ``"continuous-multioutput"`` are regression, ``"multilabel-indicator"`` is
    multi-label, anything else one label per image (whose checks then name a
    problem such as missing labels). Several columns of integers other than 0/1
    (``"multiclass-multioutput"``) are a ``ValueError``: say what they are with
    ``task``.
    """
    if task != "auto":
        if task not in TASKS:
            raise ValueError(
                f"task must be 'auto' or one of {list(TASKS)}, got {task!r}."
            )
        return task
    y = np.asarray(y)
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        if y.ndim == 1 and not np.isinf(y).any():
            return CLASSIFICATION  # whose checks name NaN as a missing label
        raise ValueError(
            f"y contains {int((~np.isfinite(y)).sum())} missing or infinite "
            f"value(s) (NaN, inf); drop those images or give them a value."
        )
    try:
        kind = type_of_target(y, input_name="y")
    except (ValueError, TypeError):  # missing or mixed labels: named below
        kind = "unknown"
    if kind in ("continuous", "continuous-multioutput"):
        return REGRESSION
    if kind == "multilabel-indicator":
        return MULTILABEL
    if kind == "multiclass-multioutput":
        raise ValueError(
            f"y has {y.shape[1]} columns of integers other than 0 and 1 "
            f"(scikit-learn's 'multiclass-multioutput'), which compare_strategies "
            f"does not rank: pass task='regression' to rank them as values, or "
            f"give one 0/1 column per label (multi-label)."
        )
    return CLASSIFICATION


@dataclass(frozen=True)
class _Targets:
    """What the checked targets hold: classes (or labels) and columns."""

    task: str
    n_classes: int  # classes, or labels of a multi-label indicator; 0: values
    n_outputs: int  # target columns (1 for single labels and 1-D values)

    @property
    def text(self):
        if self.task == REGRESSION:
            return f"{self.n_outputs} target{'s' * (self.n_outputs != 1)}"
        noun = "labels" if self.task == MULTILABEL else "classes"
        return f"{self.n_classes} {noun}"


def _check_data(X, y, task=CLASSIFICATION):
    """``(images, indexable X, y, _Targets)``; clear errors for bad targets."""
    images = check_images(X)
    n = len(images)
    if task == REGRESSION:
        y = _check_values(y, n)
        return images, _indexable(X), y, _Targets(task, 0, _n_columns(y))
    if task == MULTILABEL:
        y = _check_indicator(y, n)
        return images, _indexable(X), y, _Targets(task, y.shape[1], y.shape[1])
    y, classes = _check_labels(y, n)
    return images, _indexable(X), y, _Targets(task, len(classes), 1)


def _check_labels(y, n_images):
    """One label per image, none missing, of one comparable type, 2+ classes."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_images:
        raise ValueError(
            f"y must be 1-D with one label per image; got shape {y.shape} for "
            f"{n_images} images."
        )
    check_no_missing_labels(y)
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(
            f"y contains {int(np.isnan(y).sum())} missing label(s) (NaN); drop "
            f"those samples or give them a label."
        )
    try:
        classes = np.unique(y)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in y})
        raise ValueError(
            f"y mixes label types {kinds} that cannot be compared; use labels of "
            f"one type (e.g. all str)."
        ) from None
    if len(classes) < 2:
        raise ValueError(f"y has {len(classes)} class; at least 2 are needed.")
    return y, classes


def _check_values(y, n_images, names=None):
    """Finite numbers, one value or one row of values per image, that vary.

    ``names`` name the columns in messages (else their indices).
    """
    try:
        y = check_array(
            y, ensure_2d=False, dtype=np.float64, input_name="y", ensure_min_samples=1
        )
    except ValueError as exc:
        raise ValueError(
            f"regression targets must be finite numbers: {str(exc).splitlines()[0]}"
        ) from None
    if y.ndim not in (1, 2) or len(y) != n_images:
        raise ValueError(
            f"y must hold one value (1-D) or one row of values (2-D) per image for "
            f"regression; got shape {y.shape} for {n_images} images."
        )
    columns = y.reshape(n_images, -1)
    constant = np.flatnonzero(np.ptp(columns, axis=0) == 0)
    if constant.size:
        where = "y" if y.ndim == 1 else f"target column(s) {_columns(constant, names)}"
        raise ValueError(
            f"{where} has one value for every image; R² needs targets that vary."
        )
    return y


def _check_indicator(y, n_images, names=None):
    """A 0/1 matrix, one row per image, 2+ label columns, none constant.

    ``names`` name the columns in messages (else their indices).
    """
    y = np.asarray(y)
    if y.ndim != 2 or len(y) != n_images:
        raise ValueError(
            f"multi-label y must be a 2-D 0/1 indicator matrix with one row per "
            f"image; got shape {y.shape} for {n_images} images."
        )
    if y.shape[1] < 2:
        raise ValueError(
            "multi-label y needs 2 or more label columns; one 0/1 column is "
            "single-label (binary) classification: task='classification'."
        )
    try:
        values = y.astype(np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or not np.isin(values, (0, 1)).all():
        found = np.unique(y.astype(str))[:5].tolist()
        raise ValueError(
            f"multi-label y must hold 0 and 1 only (one column per label), found "
            f"values {found}."
        )
    constant = np.flatnonzero(np.ptp(values, axis=0) == 0)
    if constant.size:
        raise ValueError(
            f"label column(s) {_columns(constant, names)} are the same (all 0 or "
            f"all 1) for every image: nothing to learn; drop them."
        )
    return values.astype(np.int64)


def _columns(index, names):
    """Columns for a message: ``['b']`` by name, else ``[1] of y``."""
    if names is None:
        return f"{index.tolist()} of y"
    return str([names[j] for j in index])


def _n_columns(y):
    return 1 if y.ndim == 1 else y.shape[1]


def _make_splits(cv, y, random_state, verbose, task=CLASSIFICATION):
    """The ``(train, test)`` index pairs every strategy is scored on.

    Labels are stratified; values and multi-label indicators get plain
    shuffled ``KFold`` (a value has no class to stratify on).
    """
    if not isinstance(cv, Integral):
        splitter = check_cv(cv, y, classifier=task == CLASSIFICATION)
        return list(splitter.split(np.zeros((len(y), 1)), y))
    n_splits = int(cv)
    if n_splits < 2:
        raise ValueError(f"cv must be >= 2, got {cv}.")
    if task != CLASSIFICATION:
        if len(y) < n_splits:
            if len(y) < 2:
                raise ValueError("cross-validation needs at least 2 images.")
            _log(
                verbose,
                f"note: {len(y)} images; using {len(y)} folds instead of {n_splits}.",
            )
            n_splits = len(y)
        splitter = KFold(n_splits, shuffle=True, random_state=random_state)
        return list(splitter.split(np.zeros((len(y), 1))))
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < n_splits:
        if counts.min() < 2:
            raise ValueError(
                f"class {classes[counts.argmin()]!r} has a single image; "
                f"cross-validation needs at least 2 per class."
            )
        _log(
            verbose,
            f"note: the smallest class has {counts.min()} images; using "
            f"{counts.min()} folds instead of {n_splits}.",
        )
        n_splits = int(counts.min())
    splitter = StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros((len(y), 1)), y))


def _check_backbones(model, weights):
    """The backbones of the run, as a list; each one loaded before any other work.

    ``model`` is one backbone or a list of them. Loading is the check: the loader
    names an unknown model (with close matches) or weights it cannot take, and
    keeps the network for the extraction and fits that follow.
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("model is an empty list; name at least one backbone.")
    for m in models:
        if not isinstance(m, (str, nn.Module)):
            raise TypeError(
                f"model lists {m!r} ({type(m).__name__}); each backbone is a name "
                f"(str) or a torch.nn.Module."
            )
    shown = [model_display_name(m) for m in models]
    if len(set(shown)) != len(shown):
        twice = sorted({n for n in shown if shown.count(n) > 1})
        raise ValueError(
            f"model lists the backbone(s) {twice} twice; each report row names its "
            f"backbone, so list each one once."
        )
    for m, name in zip(models, shown, strict=True):
        try:
            load_backbone(m, weights)
        except (ValueError, TypeError, ImportError, OSError, RuntimeError) as exc:
            which = f"backbone {name!r} of model={shown}" if len(models) > 1 else ""
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise type(exc)(f"{which}: {msg}" if which else msg) from exc
    return models


def _pairs(names, n_models):
    """``(strategy name, backbone index)`` in run order: backbone by backbone.

    The pixel baselines use no backbone: they run once, with the first.
    """
    pairs = []
    for b in range(n_models):
        pairs += [(n, b) for n in names if b == 0 or STRATEGIES[n].kind != "pixels"]
    return pairs


class _SharedInputs:
    """What strategies consume, computed once per run and shared by them all.

    Codes strategies get ``(fitted extractor, codes of all images)`` per
    ``(backbone, layer, pooling)``; the pixel baseline gets its pixels;
    fine-tuning strategies get the images. The only cache of a run.
    """

    def __init__(self, X, images, contexts, verbose):
        self.X = X
        self.images = images
        self.contexts = contexts  # one StrategyContext per backbone
        self.names = [model_display_name(c.model) for c in contexts]
        self.verbose = verbose
        self._store = {}  # key -> (transformer fitted, features, seconds)
        self._earlier = {}  # backbone index -> its "earlier layer"

    def backbone_name(self, strat, b):
        """The backbone a strategy runs on (``None``: the pixels use none)."""
        return None if strat.kind == "pixels" else self.names[b]

    def earlier(self, b):
        """Backbone ``b``'s "earlier layer", resolved once."""
        if b not in self._earlier:
            ctx = self.contexts[b]
            self._earlier[b] = earlier_layer(ctx.model, ctx.weights)
        return self._earlier[b]

    def for_strategy(self, strat, b):
        """``(transformer or None, features, layer text, extraction seconds)``."""
        if strat.kind == "codes":
            layer = self.earlier(b) if strat.layer == EARLIER else strat.layer
            layer = None if layer == PENULTIMATE else layer
            key = ("codes", b, layer, (strat.pooling or "avg") if layer else None)
            transformer, features, seconds = self._get(key)
            return transformer, features, _layer_name(key), seconds
        if strat.kind == "pixels":
            size = _pixel_size(self.images)
            transformer, features, seconds = self._get(("pixels", size))
            return transformer, features, f"pixels {size}x{size}", seconds
        return None, self.X, None, 0.0

    def _get(self, key):
        if key not in self._store:
            ts = time.perf_counter()
            if key[0] == "codes":
                transformer = self.extractor(key[1], key[2], key[3] or "avg")
            else:
                transformer = PixelFeatures(size=key[1])
            features = transformer.fit(self.X).transform(self.X)
            self._store[key] = (transformer, features, time.perf_counter() - ts)
            if key[0] == "codes":
                _log(
                    self.verbose,
                    f"    codes {self._key_name(key)}: {features.shape[1]} "
                    f"features, {self._store[key][2]:.1f} s (shared by later "
                    f"strategies)",
                )
        return self._store[key]

    def extractor(self, b, layer=None, pooling="avg"):
        """A ``CNNFeatureExtractor`` (unfitted) for backbone ``b`` of the run."""
        ctx = self.contexts[b]
        return CNNFeatureExtractor(
            model=ctx.model,
            weights=ctx.weights,
            layer=layer,
            pooling=pooling,
            input_size=ctx.input_size,
            device=ctx.device,
            precision=ctx.precision,
            verbose=int(self.verbose >= 2),
        )

    def transformers(self):
        """The fitted transformers (extractors, pixel features) of this run."""
        return [transformer for transformer, _, _ in self._store.values()]

    def extractions(self):
        """``{layer text: seconds}`` of the codes extracted (backbone first when
        several)."""
        return {
            self._key_name(k): v[2] for k, v in self._store.items() if k[0] == "codes"
        }

    def _key_name(self, key):
        several = len(self.names) > 1
        return (f"{self.names[key[1]]} " if several else "") + _layer_name(key)


@dataclass
class _Run:
    """One strategy's outcome: the report row, and what refitting the winner needs."""

    row: dict
    transformer: object = None
    features: object = None
    head: object = None
    kind: str = "codes"
    estimator_params: dict = field(default_factory=dict)

    @classmethod
    def not_run(cls, strat, status, backbone=None):
        """A strategy skipped or failed: a report row without scores."""
        return cls(_row(strat, status, backbone), kind=strat.kind)

    def refit(self, y):
        """The winner as one estimator taking images, fitted without re-extracting."""
        with _small_head_threads(self.kind):
            head = clone(self.head).fit(self.features, y)
        if self.transformer is None:
            return head
        name = "cnn" if isinstance(self.transformer, CNNFeatureExtractor) else "pixels"
        return Pipeline([(name, self.transformer), ("head", head)])


def _row(strat, status, backbone=None, layer=None):
    return {
        "strategy": strat.name,
        "backbone": backbone,
        "kind": strat.kind,
        "description": strat.description,
        "layer": layer,
        "status": status,
        "mean": float("nan"),
        "std": float("nan"),
        "scores": [],
        "input_size": None,
        "settings": None,
        "time": float("nan"),
        "fit_time": float("nan"),
        "predict_time": float("nan"),
        "extract_time": 0.0,
    }


def _cross_validate(strat, ctx, inputs, b, y, splits, scoring, n_jobs):
    """Score one strategy on backbone ``b`` and the shared folds; a failure is a
    result, not a crash."""
    verbose = inputs.verbose
    backbone = inputs.backbone_name(strat, b)
    estimator = strat.factory(ctx)
    try:
        transformer, features, layer, seconds = inputs.for_strategy(strat, b)
        size = _input_size(strat, ctx, transformer, estimator)
        if strat.kind == "finetune":
            layer = f"images at {size} px"
        with _small_head_threads(strat.kind):
            cvres = cross_validate(
                estimator,
                features,
                y,
                cv=splits,
                scoring=scoring,
                n_jobs=n_jobs,
                error_score="raise",
            )
    except Exception as exc:  # noqa: BLE001 - one strategy failing is a result
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        _log(verbose, f"    failed: {msg}")
        return _Run.not_run(strat, f"failed ({type(exc).__name__}: {msg})", backbone)
    scores = np.asarray(cvres["test_score"], dtype=float)
    row = _row(strat, "ok", backbone, layer)
    # codes and pixels: which features the head sits on, then the head
    tuned = strat.kind == "finetune"
    settings = settings_text(estimator, named=not tuned)
    row.update(
        scores=scores.tolist(),
        mean=float(scores.mean()),
        std=float(scores.std()),
        input_size=size,
        settings=settings if tuned else f"{layer}: {settings}",
        fit_time=float(np.mean(cvres["fit_time"])),
        predict_time=float(np.mean(cvres["score_time"])),
        extract_time=seconds,
    )
    # one fold on its own: fit + predict, and the codes of its images
    row["time"] = row["fit_time"] + row["predict_time"] + seconds
    _log(
        verbose,
        f"    {_scoring_name(scoring)} {row['mean']:.3f} +- {row['std']:.3f} "
        f"(fit {row['fit_time']:.2f} s per fold)",
    )
    return _Run(
        row,
        transformer,
        features,
        estimator,
        strat.kind,
        estimator.get_params(deep=False),
    )


def _input_size(strat, ctx, transformer, estimator):
    """The size a strategy's images are resized to, as text (``"224"``)."""
    if strat.kind == "pixels":
        size = (transformer.size, transformer.size)
    elif strat.kind == "codes":
        size = transformer.preprocessing_.input_size
    else:
        size = getattr(estimator, "input_size", None)
        if size is None:  # the weights' own
            size = load_backbone(ctx.model, ctx.weights)[1].input_size
    return _size_text(size)


def _resolve_runtime(ctx):
    """``{"device": ..., "precision": ..., "cpu_kind": ...}`` the networks run in."""
    policy = resolve_policy(ctx.device, ctx.precision)
    report = policy.report()
    return {
        "device": report["device"],
        "precision": report["inference"],
        "cpu_kind": report["cpu_kind"],
    }


def _run_info(ctx, models, runtime, inputs, splits, scoring, strategies, names, runs):
    """The report's metadata: data, backbones, runtime, versions, seeds."""
    engines = {
        run.estimator_params["engine"]
        for run in runs
        if "engine" in run.estimator_params
    }
    engines |= {
        t.get_params()["engine"]
        for t in inputs.transformers()
        if "engine" in t.get_params()
    }
    automatic = isinstance(strategies, str) and strategies.strip() in ("auto", "all")
    return {
        "task": ctx.task,
        "scoring": _scoring_name(scoring),
        "n_splits": len(splits),
        "n_samples": ctx.n_samples,
        "n_classes": None if ctx.task == REGRESSION else ctx.n_classes,
        "n_targets": ctx.n_outputs,
        "model": ", ".join(model_display_name(m) for m in models),
        "models": [model_display_name(m) for m in models],
        "weights": ctx.weights
        if isinstance(ctx.weights, (str, type(None)))
        else str(ctx.weights),
        # the caller's size, for every strategy; None: each one's own (rows)
        "input_size": None if ctx.input_size is None else _size_text(ctx.input_size),
        "strategies": strategies.strip() if automatic else ",".join(names),
        **runtime,
        "engine": ",".join(sorted(map(str, engines))) if engines else None,
        "random_state": ctx.random_state,
        "seeds": {"folds": ctx.random_state, "estimators": ctx.random_state},
        "versions": library_versions(),
        "extractions": inputs.extractions(),
    }


# ---------------------------------------------------------------------- helpers
def _scoring_name(scoring):
    if isinstance(scoring, str):
        return scoring
    return getattr(scoring, "__name__", "score")


def _small_head_threads(kind):
    """One BLAS thread for heads on feature matrices.

    These problems are small; after torch has run, multithreaded BLAS competes
    with torch's OpenMP threads and LogisticRegression ran 35x slower here (2
    busy cores). Fine-tuning strategies keep every thread.
    """
    if kind == "finetune":
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _layer_name(key):
    _, _, layer, pooling = key
    return "penultimate" if layer is None else f"{layer}/{pooling}"


def _size_text(size):
    """``224`` -> ``"224"``, ``(240, 200)`` -> ``"240x200"``."""
    if isinstance(size, Integral):
        return str(int(size))
    h, w = size
    return str(h) if h == w else f"{h}x{w}"


def _indexable(X):
    """Images in a form sklearn's splitters can index (arrays or object arrays)."""
    if isinstance(X, np.ndarray):
        return X
    if hasattr(X, "to_numpy") or hasattr(X, "__array__") and not isinstance(X, list):
        return np.asarray(X)
    items = list(X)
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


def _pixel_size(images):
    """Side of the pixel baseline: the images' own, at most 32 px."""
    shape = images.image_shape
    return int(min(32, max(shape))) if shape is not None else 32
