"""compare_strategies: measure which transfer strategy wins on the user's data.

The source documents give a rule of thumb (small / large data x similar / dissimilar
to ImageNet -> CNN codes + linear classifier, earlier layer + SVM, fine-tune the top,
fine-tune all). Here the rule only decides which strategies "auto" tries and in what
order; cross-validation on the user's own images decides the winner.

Strategies live in a registry (``STRATEGIES``): a name, a description, a kind and
a factory returning a scikit-learn estimator. Kinds:

``"pixels"``
    A head on resized, flattened grayscale pixels (the baseline).
``"codes"``
    A head on CNN codes of one ``(layer, pooling)``. Codes are extracted once per
    key on all images and shared by every such strategy and every fold; the
    reported estimator is the full ``Pipeline(CNNFeatureExtractor, head)``.
``"finetune"``
    An estimator taking images directly (FineTunedClassifier), cross-validated on
    the images; skipped once ``time_budget`` is spent.

Classes from other modules (FineTunedClassifier, PrototypeClassifier,
CosineSoftmaxClassifier) are imported lazily: a strategy whose class cannot be
imported is reported as unavailable instead of failing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, check_cv, cross_validate
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ._backbones import model_display_name
from ._extractor import CNNFeatureExtractor
from ._images import check_images
from ._report import StrategyReport
from ._strategies import (
    EARLIER,
    PENULTIMATE,
    STRATEGIES,
    PixelFeatures,
    Strategy,
    _indexable,
    _pixel_size,
    _resolve_names,
    auto_strategies,
    available_strategies,
    earlier_layer,
    finetune_input_size,
    top_blocks,
)

__all__ = [
    "STRATEGIES",
    "PixelFeatures",
    "Strategy",
    "StrategyReport",
    "auto_strategies",
    "available_strategies",
    "compare_strategies",
    "earlier_layer",
    "finetune_input_size",
    "top_blocks",
]


# ------------------------------------------------------------------- the driver
def _log(verbose, msg):
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def compare_strategies(
    X,
    y,
    *,
    model="efficientnet_lite0",
    weights="imagenet",
    strategies="auto",
    cv=5,
    scoring="accuracy",
    n_jobs=None,
    random_state=None,
    input_size=None,
    time_budget=None,
    refit=True,
    verbose=1,
):
    """Cross-validate transfer-learning strategies on your images; rank them.

    Which works best -- CNN codes + a linear classifier, an earlier layer + an SVM,
    a few-shot head, fine-tuning -- depends on how much data you have and how much
    it resembles ImageNet. This measures it: every strategy is scored on the same
    folds, and the winner is refit on all data.

    Parameters
    ----------
    X : images
        Anything :class:`~sktransfer.CNNFeatureExtractor` takes: arrays
        ``(n, h, w[, c])``, lists of PIL images or arrays, lists of file paths.
    y : array-like of shape (n_samples,)
        Class labels of any type.
    model, weights : backbone spec, default="efficientnet_lite0", "imagenet"
        As in :class:`~sktransfer.CNNFeatureExtractor`.
    strategies : "auto", "all", str or list of str, default="auto"
        Names from ``STRATEGIES`` (a comma-separated string works too).
        ``"auto"`` picks by data size (``auto_strategies``). Strategies whose
        classes are not installed are reported as unavailable.
    cv : int or cross-validation splitter, default=5
        An int means ``StratifiedKFold(cv, shuffle=True)`` (reduced, with a note,
        when the smallest class has fewer images). The same folds serve every
        strategy.
    scoring : str or callable, default="accuracy"
        A scikit-learn scorer (greater is better).
    n_jobs : int, default=None
        Parallel folds in ``cross_validate``.
    random_state : int, default=None
        Seeds the folds and the strategies' estimators.
    input_size : int, default=None
        Image size for the backbone (``None``: the weights' own, e.g. 224).
        Smaller is faster. With ``None``, fine-tuning strategies on a CPU run at
        96 px (``finetune_input_size``); the report's ``layer`` column says
        the size each one used.
    time_budget : float, default=None
        Seconds; once exceeded, remaining fine-tuning strategies are skipped (the
        report says so). Cheap strategies always run.
    refit : bool, default=True
        Refit the winner on all data as ``best_estimator_``.
    verbose : int, default=1
        Progress on stderr (and extraction progress bars when >= 2).

    Returns
    -------
    report : StrategyReport
        Ranked table, ``best_name_``, ``best_estimator_``, ``to_frame()``,
        ``plot()``, ``to_json()``.

    Notes
    -----
    Codes are extracted once per ``(backbone, layer, pooling)`` on all images and
    every codes-based strategy and fold reuses them: the extractor is not fitted
    on labels, so sharing it across folds leaks nothing.

    Examples
    --------
    >>> from sktransfer import compare_strategies
    >>> from sktransfer.datasets import load_fashion_mnist_sample
    >>> X, y = load_fashion_mnist_sample(return_X_y=True)
    >>> report = compare_strategies(X, y, input_size=96, cv=5)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    5-fold CV accuracy on 1000 images, 10 classes; backbone efficientnet_lite0 ...
    rank  strategy        score           fit s  pred s  description
    1     earlier_svc     ...
    >>> report.best_estimator_.predict(X[:3])  # doctest: +SKIP
    array([9, 0, 0])
    """
    t0 = time.perf_counter()
    images = check_images(X)
    Xi = _indexable(X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(images):
        raise ValueError(
            f"y must be 1-D with one label per image; got shape {y.shape} for "
            f"{len(images)} images."
        )
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"y has {len(classes)} class; at least 2 are needed.")
    names, automatic = _resolve_names(strategies, len(y), len(classes))

    if isinstance(cv, Integral):
        n_splits = int(cv)
        if n_splits < 2:
            raise ValueError(f"cv must be >= 2, got {cv}.")
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
    else:
        splitter = check_cv(cv, y, classifier=True)
    splits = list(splitter.split(np.zeros((len(y), 1)), y))

    ctx = {
        "model": model,
        "weights": weights,
        "input_size": input_size,
        "random_state": random_state,
        "n_samples": len(y),
        "n_classes": len(classes),
    }
    _log(
        verbose,
        f"comparing {len(names)} strategies on {len(y)} images, {len(classes)} "
        f"classes, {len(splits)}-fold CV ({scoring})",
    )

    codes_cache = {}  # (layer, pooling) -> (extractor fitted, codes, seconds)
    features_cache = {}
    resolved_earlier = None
    results = []
    fitted_parts = {}
    for i, name in enumerate(names, 1):
        strat = STRATEGIES[name]
        row = {
            "strategy": name,
            "kind": strat.kind,
            "description": strat.description,
            "layer": None,
            "mean": float("nan"),
            "std": float("nan"),
            "scores": [],
            "fit_time": float("nan"),
            "predict_time": float("nan"),
            "extract_time": 0.0,
        }
        results.append(row)
        ok, reason = strat.availability()
        if not ok:
            row["status"] = f"unavailable: {reason}"
            _log(verbose, f"[{i}/{len(names)}] {name}: unavailable ({reason})")
            continue
        spent = time.perf_counter() - t0
        if strat.kind == "finetune" and time_budget is not None and spent > time_budget:
            row["status"] = f"skipped (time budget {time_budget:g} s spent)"
            _log(
                verbose,
                f"[{i}/{len(names)}] {name}: skipped, time budget of {time_budget:g} s "
                f"exceeded ({spent:.0f} s)",
            )
            continue
        _log(verbose, f"[{i}/{len(names)}] {name}: {strat.description} ...")

        estimator = strat.factory(ctx)
        if strat.kind == "codes":
            layer = strat.layer
            if layer == EARLIER:
                if resolved_earlier is None:
                    resolved_earlier = earlier_layer(model, weights)
                layer = resolved_earlier
            layer_arg = None if layer == PENULTIMATE else layer
            pooling = strat.pooling or "avg"
            key = (layer_arg, pooling if layer_arg is not None else None)
            if key not in codes_cache:
                ts = time.perf_counter()
                extractor = CNNFeatureExtractor(
                    model=model,
                    weights=weights,
                    layer=layer_arg,
                    pooling=pooling,
                    input_size=input_size,
                    verbose=int(verbose >= 2),
                )
                codes = extractor.fit(Xi).transform(Xi)
                codes_cache[key] = (extractor, codes, time.perf_counter() - ts)
                _log(
                    verbose,
                    f"    codes {_key_name(key)}: {codes.shape[1]} features, "
                    f"{codes_cache[key][2]:.1f} s (shared by later strategies)",
                )
            extractor, features, row["extract_time"] = codes_cache[key]
            row["layer"] = _key_name(key)
            head = estimator
        elif strat.kind == "pixels":
            size = _pixel_size(images)
            if size not in features_cache:
                pix = PixelFeatures(size=size).fit(Xi)
                features_cache[size] = (pix, pix.transform(Xi))
            extractor, features = features_cache[size]
            row["layer"] = f"pixels {size}x{size}"
            head = estimator
        else:
            extractor, features, head = None, Xi, estimator
            size = getattr(estimator, "input_size", None)
            row["layer"] = f"images at {size} px" if size else "images"

        try:
            with _small_head_threads(strat.kind):
                cvres = cross_validate(
                    head,
                    features,
                    y,
                    cv=splits,
                    scoring=scoring,
                    n_jobs=n_jobs,
                    error_score="raise",
                )
        except Exception as exc:  # noqa: BLE001 - one strategy failing is a result
            msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            row["status"] = f"failed ({type(exc).__name__}: {msg})"
            _log(verbose, f"    failed: {msg}")
            continue
        scores = np.asarray(cvres["test_score"], dtype=float)
        row.update(
            status="ok",
            scores=scores.tolist(),
            mean=float(scores.mean()),
            std=float(scores.std()),
            fit_time=float(np.mean(cvres["fit_time"])),
            predict_time=float(np.mean(cvres["score_time"])),
        )
        fitted_parts[name] = (extractor, features, head)
        _log(
            verbose,
            f"    {scoring} {row['mean']:.3f} +- {row['std']:.3f} "
            f"(fit {row['fit_time']:.2f} s per fold)",
        )

    info = {
        "scoring": scoring
        if isinstance(scoring, str)
        else getattr(scoring, "__name__", "score"),
        "n_splits": len(splits),
        "n_samples": len(y),
        "n_classes": len(classes),
        "model": model_display_name(model),
        "weights": weights if isinstance(weights, (str, type(None))) else str(weights),
        "input_size": _input_size_text(codes_cache, input_size),
        "strategies": "auto" if automatic else ",".join(names),
        "random_state": random_state,
        "extractions": {_key_name(k): v[2] for k, v in codes_cache.items()},
    }
    report = StrategyReport(results, info)
    if refit and report.best_name_ is not None:
        _log(verbose, f"refitting {report.best_name_} on all {len(y)} images ...")
        with _small_head_threads(STRATEGIES[report.best_name_].kind):
            report.best_estimator_ = _refit(fitted_parts[report.best_name_], y)
    info["total_time"] = time.perf_counter() - t0
    return report


def _small_head_threads(kind):
    """One BLAS thread for heads on feature matrices.

    These problems are small; after torch has run, multithreaded BLAS competes
    with torch's OpenMP threads and LogisticRegression ran 35x slower here (2
    busy cores). Fine-tuning strategies keep every thread.
    """
    if kind == "finetune":
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _input_size_text(codes_cache, input_size):
    for extractor, _, _ in codes_cache.values():
        h, w = extractor.preprocessing_.input_size
        return str(h) if h == w else f"{h}x{w}"
    return "default" if input_size is None else str(input_size)


def _key_name(key):
    layer, pooling = key
    return "penultimate" if layer is None else f"{layer}/{pooling}"


def _refit(parts, y):
    """The winner as one estimator taking images, fitted without re-extracting."""
    extractor, features, head = parts
    head = clone(head).fit(features, y)
    if extractor is None:
        return head
    name = "cnn" if isinstance(extractor, CNNFeatureExtractor) else "pixels"
    return Pipeline([(name, extractor), ("head", head)])
