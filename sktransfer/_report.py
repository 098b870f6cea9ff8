"""StrategyReport: the ranked result of compare_strategies (table, JSON, CSV, plot).

It also owns how a row reads an estimator's settings (``settings_text``: the
parameters that differ from the estimator's defaults).
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np

__all__ = ["StrategyReport", "settings_text"]

_COLUMNS = (
    "strategy",
    "backbone",
    "kind",
    "status",
    "mean",
    "std",
    "input_size",
    "time",
    "fit_time",
    "predict_time",
    "extract_time",
    "settings",
    "description",
)

# Parameters a strategy's estimator takes from the run, not from the strategy:
# the report has columns (backbone, input size) or metadata (device, seed) for them
RUN_PARAMS = frozenset(
    {"model", "weights", "input_size", "device", "precision", "random_state", "verbose"}
)


def settings_text(estimator, named=False):
    """The parameters of ``estimator`` that differ from its class's defaults, short.

    ``"defaults"`` when none do (``named=True``: ``"Name(changes)"``, or the
    class name alone). The run's own parameters (``RUN_PARAMS``: the
    backbone, input size, device, precision, seed, verbosity) are left out. A
    ``Pipeline`` reads as its steps joined by ``+``, and an estimator held by a
    parameter (a meta-estimator's ``estimator``) as ``Name(changes)``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> settings_text(LogisticRegression(C=0.5, random_state=0))
    'C=0.5'
    >>> settings_text(make_pipeline(StandardScaler(), LogisticRegression(C=0.5)))
    'StandardScaler + LogisticRegression(C=0.5)'
    """
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list):
        return " + ".join(_named_settings(step) for _, step in steps)
    if named:
        return _named_settings(estimator)
    return ", ".join(_changed_params(estimator)) or "defaults"


def _named_settings(estimator):
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list):
        return settings_text(estimator)
    changed = _changed_params(estimator)
    name = type(estimator).__name__
    return f"{name}({', '.join(changed)})" if changed else name


def _changed_params(estimator):
    """``["name=value", ...]`` of the parameters that differ from the defaults."""
    try:
        defaults = inspect.signature(type(estimator).__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin __init__
        defaults = {}
    out = []
    for name, value in estimator.get_params(deep=False).items():
        if name in RUN_PARAMS:
            continue
        default = getattr(defaults.get(name), "default", inspect.Parameter.empty)
        if _same(value, default):
            continue
        if hasattr(value, "get_params") and not isinstance(value, type):
            text = _named_settings(value)  # an estimator held by a meta-estimator
            out.append(text if name in ("estimator", "regressor") else f"{name}={text}")
        else:
            out.append(f"{name}={_value_text(value)}")
    return out


def _same(value, default):
    if value is default:
        return True
    if type(value) is not type(default) and not (
        isinstance(value, (int, float)) and isinstance(default, (int, float))
    ):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays and the like: shown as set
        return False


def _value_text(value):
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class StrategyReport:
    """What :func:`~sktransfer.compare_strategies` measured, ranked best first.

    The table's first line says the task (single-label classification,
    regression or multi-label) and the metric the strategies are ranked by.
    :func:`compare_strategies` builds it; a report is not built by hand.

    Parameters
    ----------
    results : list of dict
        One row per strategy and backbone, unranked (see ``results_``).
    info : dict
        What the run was (see ``info_``).
    best_estimator : estimator or None, default=None
        The winner refit on all data (see ``best_estimator_``).

    Attributes
    ----------
    results_ : list of dict
        One row per strategy and backbone: ``strategy``, ``backbone`` (``None``
        for the pixel baselines, which use none), ``kind``, ``status`` ("ok",
        "unavailable: ...", "skipped: ...", "failed: ..."), ``mean`` / ``std``
        of the fold scores, ``scores`` (per fold), ``input_size`` (the size
        the images were resized to, e.g. ``"224"``), ``settings`` (the
        estimator's parameters that differ from its defaults, see
        ``settings_text``; codes strategies start with their layer),
        ``fit_time`` / ``predict_time`` (mean seconds per fold; for codes
        strategies the head only), ``extract_time`` (seconds spent once
        extracting the shared codes of all images), ``time`` (what one fold
        costs on its own: fit + predict, plus the codes' extraction for codes
        strategies), ``layer``, ``description``.
    task_ : {"classification", "regression", "multilabel"}
        What the targets were (``info_["task"]``).
    scoring_ : str
        The metric ranked by (``info_["scoring"]``): ``"accuracy"``, ``"r2"``,
        ``"f1_micro"`` unless another scorer was passed.
    best_name_ : str or None
        The strategy with the highest mean score.
    best_backbone_ : str or None
        The backbone the winner ran on (``None`` for a pixel baseline).
    best_score_ : float
    best_estimator_ : estimator or None
        The winner refit on all data, taking images (for codes strategies a
        ``Pipeline(CNNFeatureExtractor, head)``).
    info_ : dict
        Task, scoring, number of folds, samples, classes (or labels) and
        target columns (``n_targets``), backbone, input size,
        ``device`` and ``precision`` the networks ran in, ``engine`` (when the
        estimators have one), ``versions`` of the libraries, ``seeds`` (of the
        folds and the estimators), seconds per extraction, total time.
    """

    def __init__(self, results, info, best_estimator=None):
        ok = [r for r in results if r["status"] == "ok"]
        ok.sort(key=lambda r: -r["mean"])
        rest = [r for r in results if r["status"] != "ok"]
        for rank, r in enumerate(ok, 1):
            r["rank"] = rank
        for r in rest:
            r["rank"] = None
        self.results_ = ok + rest
        self.info_ = info
        self.best_name_ = ok[0]["strategy"] if ok else None
        self.best_backbone_ = ok[0].get("backbone") if ok else None
        self.best_score_ = ok[0]["mean"] if ok else float("nan")
        self.best_estimator_ = best_estimator

    @property
    def task_(self):
        return self.info_.get("task", "classification")

    @property
    def scoring_(self):
        return self.info_.get("scoring")

    # --------------------------------------------------------------- exports
    def to_dict(self):
        """Plain-Python summary (JSON-serializable)."""
        rows = []
        for r in self.results_:
            rows.append({k: _plain(v) for k, v in r.items()})
        return {
            "best": self.best_name_,
            "best_score": _plain(self.best_score_),
            "info": {k: _plain(v) for k, v in self.info_.items()},
            "results": rows,
        }

    def to_json(self, path=None, **kwargs):
        """JSON text of :meth:`to_dict`; written to ``path`` when given.

        Parameters
        ----------
        path : str, path or None, default=None
            File to write the text to (overwritten); ``None`` only returns it.
        **kwargs
            Passed to ``json.dumps`` (``indent=2`` unless given).

        Returns
        -------
        text : str
        """
        kwargs.setdefault("indent", 2)
        text = json.dumps(self.to_dict(), **kwargs)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    def to_frame(self):
        """A pandas DataFrame, one row per strategy, best first (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover
            raise ImportError("to_frame() needs pandas: pip install pandas") from exc
        cols = ["rank", *_COLUMNS, "layer", "scores"]
        return pd.DataFrame([{c: r.get(c) for c in cols} for r in self.results_])

    def to_csv(self, path):
        """Write the table to ``path`` as CSV (no pandas needed).

        One row per strategy; ``fold_0``, ``fold_1``, ... hold the per-fold
        scores, and the run's metadata (device, precision, engine, seeds,
        versions) closes each row as ``info_`` columns, so the file stands alone.

        Parameters
        ----------
        path : str or path
            The CSV file to write (overwritten).
        """
        import csv

        n_folds = max([len(r.get("scores") or []) for r in self.results_] + [0])
        folds = [f"fold_{i}" for i in range(n_folds)]
        meta = _csv_metadata(self.info_)
        cols = ["rank", *_COLUMNS, "layer", *folds, *meta]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(cols)
            for r in self.results_:
                scores = list(r.get("scores") or [])
                scores += [None] * (n_folds - len(scores))
                row = [r.get(c) for c in ["rank", *_COLUMNS, "layer"]]
                writer.writerow(row + scores + list(meta.values()))

    def plot(self, ax=None):
        """Bars of the mean score, with every fold's score as a point.

        The score axis starts at chance level (``1 / n_classes`` for accuracy
        scores) or at 0, never at a truncated value, so bar lengths compare
        honestly; a dashed line marks chance.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; ``None`` makes a new figure sized to the table.

        Returns
        -------
        ax : matplotlib Axes
        """
        import matplotlib.pyplot as plt

        ok = [r for r in self.results_ if r["status"] == "ok"][::-1]
        if ax is None:
            _, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(ok), 2) + 1.3))
        info = self.info_
        names = [_row_label(r, self._several_backbones()) for r in ok]
        means = np.array([r["mean"] for r in ok], dtype=float)
        folds = [np.asarray(r["scores"], dtype=float) for r in ok]
        all_scores = np.concatenate([means, *folds]) if ok else np.zeros(1)
        chance = _chance_level(info)
        base = 0.0
        if chance is not None and all_scores.min() >= chance:
            base = chance
        elif all_scores.min() < 0:
            base = float(all_scores.min()) - 0.05
        colors = ["grey" if r["kind"] == "pixels" else "C0" for r in ok]
        if ok and ok[-1]["strategy"] == self.best_name_:
            colors[-1] = "C2"
        ax.barh(names, means - base, left=base, color=colors, alpha=0.8)
        rng = np.random.default_rng(0)
        for i, scores in enumerate(folds):
            jitter = rng.uniform(-0.15, 0.15, len(scores))
            ax.scatter(scores, i + jitter, s=14, color="k", zorder=3, lw=0)
        top = float(all_scores.max())
        for i, (m, scores) in enumerate(zip(means, folds, strict=True)):
            x = max(m, float(scores.max()) if len(scores) else m)
            ax.text(x + 0.01, i, f"{m:.3f}", va="center", fontsize=9)
        if chance is not None and base == chance:
            ax.axvline(chance, color="k", ls="--", lw=0.8)
            ax.text(chance, len(ok) - 0.4, " chance", fontsize=8, va="bottom")
        upper = 1.0 if chance is not None and top <= 1.0 else top
        ax.set_xlim(base, upper + 0.08 * max(upper - base, 1e-3))
        ax.set_xlabel(
            f"{info.get('scoring')} ({info.get('n_splits')}-fold CV: bar = mean, "
            f"dots = folds)"
        )
        ax.set_title(
            f"{info.get('model')}: {self.task_}, {info.get('n_samples')} images, "
            f"{_targets_text(info)}",
            fontsize=10,
        )
        ax.figure.tight_layout()
        return ax

    # ------------------------------------------------------------- printing
    def _several_backbones(self):
        return len({r.get("backbone") for r in self.results_} - {None}) > 1

    def format_table(self):
        """The readable table that ``str(report)`` returns.

        One row per strategy (and backbone, when several were compared): the
        score, the input size, ``time s`` (one fold on its own: fit + predict,
        the codes' extraction included) and the settings; the files
        (``to_csv``, ``to_json``) add the fit / predict / extraction seconds and
        the description.
        """
        info = self.info_
        several = self._several_backbones()
        size = info.get("input_size")
        head = (
            f"{self.task_}: {info.get('n_splits')}-fold CV {info.get('scoring')} on "
            f"{info.get('n_samples')} images, {_targets_text(info)}; "
            f"backbone{'s' * several} {info.get('model')} ({info.get('weights')})"
            + (f" at {size} px" if size is not None else "")
        )
        titles = ["rank", "strategy", "backbone", "score", "size", "time s"]
        rows = []
        for r in self.results_:
            cells = [str(r["rank"] or "-"), r["strategy"], r.get("backbone") or "-"]
            if r["status"] == "ok":
                cells += [
                    f"{r['mean']:.3f} +- {r['std']:.3f}",
                    str(r.get("input_size") or "-"),
                    f"{r.get('time', float('nan')):.2f}",
                    r.get("settings") or "",
                ]
            else:
                cells += [r["status"]]
            rows.append(cells)
        if not several:
            titles.pop(2)
            for cells in rows:
                cells.pop(2)
        n = len(titles)
        scored = [c for c in rows if len(c) > n]
        widths = [
            max(len(c[i]) for c in [titles, *(rows if i < n - 3 else scored)])
            for i in range(n)
        ]
        lines = [head, _cells(titles + ["settings"], widths)]
        lines += [_cells(c, widths) for c in rows]
        ext = info.get("extractions") or {}
        if ext:
            parts = [f"{k} {v:.1f} s" for k, v in ext.items()]
            lines.append("codes extracted once per layer: " + ", ".join(parts))
        if self.best_name_ is not None:
            on = f" on {self.best_backbone_}" if several and self.best_backbone_ else ""
            lines.append(
                f"best: {self.best_name_}{on} ({self.best_score_:.3f})"
                + (
                    "; report.best_estimator_ is refit on all images"
                    if self.best_estimator_ is not None
                    else ""
                )
            )
        if info.get("total_time") is not None:
            lines.append(f"total time {info['total_time']:.1f} s")
        return "\n".join(lines)

    def __str__(self):
        return self.format_table()

    def __repr__(self):
        return self.format_table()


def _cells(cells, widths):
    """One table line: the cells padded to ``widths``, the last one as it is."""
    padded = [f"{c:<{w}}" for c, w in zip(cells, widths, strict=False)]
    return "  ".join(padded[: len(cells) - 1] + [cells[-1]]).rstrip()


def _row_label(row, several):
    """A row's name in a plot: the strategy, with its backbone when several."""
    if several and row.get("backbone"):
        return f"{row['strategy']} ({row['backbone']})"
    return row["strategy"]


_CHANCE_SCORERS = ("accuracy", "balanced_accuracy", "top_k_accuracy")


def _chance_level(info):
    """``1 / n_classes`` for accuracy scores, else None (chance unknown)."""
    n = info.get("n_classes")
    if info.get("scoring") in _CHANCE_SCORERS and n:
        return 1.0 / n
    return None


def _targets_text(info):
    """``"10 classes"``, ``"3 labels"`` or ``"2 targets"``."""
    task = info.get("task", "classification")
    if task == "regression":
        n = info.get("n_targets")
        return f"{n} target{'s' * (n != 1)}"
    return f"{info.get('n_classes')} {'labels' if task == 'multilabel' else 'classes'}"


def _csv_metadata(info):
    """The run's metadata as flat ``{column: value}`` for the CSV."""
    meta = {"task": info.get("task", "classification"), "scoring": info.get("scoring")}
    for key in ("device", "precision", "engine", "model", "weights", "input_size"):
        meta[key] = info.get(key)
    for key, value in (info.get("seeds") or {}).items():
        meta[f"seed_{key}"] = value
    for key, value in (info.get("versions") or {}).items():
        meta[f"{key}_version"] = value
    return meta


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)
