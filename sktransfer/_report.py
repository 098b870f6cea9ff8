"""StrategyReport: the ranked result of compare_strategies (table, JSON, CSV, plot)."""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["StrategyReport"]

_COLUMNS = (
    "strategy",
    "kind",
    "status",
    "mean",
    "std",
    "fit_time",
    "predict_time",
    "extract_time",
    "description",
)


class StrategyReport:
    """What :func:`compare_strategies` measured, ranked best first.

    The table's first line says the task (single-label classification,
    regression or multi-label) and the metric the strategies are ranked by.

    Attributes
    ----------
    results_ : list of dict
        One row per strategy: ``strategy``, ``kind``, ``status`` ("ok",
        "unavailable: ...", "skipped: ...", "failed: ..."), ``mean`` / ``std`` of
        the fold scores, ``scores`` (per fold), ``fit_time`` / ``predict_time``
        (mean seconds per fold; for codes strategies the head only),
        ``extract_time`` (seconds spent once extracting the shared codes),
        ``layer``, ``description``.
    task_ : {"classification", "regression", "multilabel"}
        What the targets were (``info_["task"]``).
    scoring_ : str
        The metric ranked by (``info_["scoring"]``): ``"accuracy"``, ``"r2"``,
        ``"f1_micro"`` unless another scorer was passed.
    best_name_ : str or None
        The strategy with the highest mean score.
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
        """JSON text of :meth:`to_dict`; written to ``path`` when given."""
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
        honestly; a dashed line marks chance. Returns the Axes.
        """
        import matplotlib.pyplot as plt

        ok = [r for r in self.results_ if r["status"] == "ok"][::-1]
        if ax is None:
            _, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(ok), 2) + 1.3))
        info = self.info_
        names = [r["strategy"] for r in ok]
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
    def format_table(self):
        """The readable table that ``str(report)`` returns."""
        info = self.info_
        head = (
            f"{self.task_}: {info.get('n_splits')}-fold CV {info.get('scoring')} on "
            f"{info.get('n_samples')} images, {_targets_text(info)}; "
            f"backbone {info.get('model')} ({info.get('weights')}) at "
            f"{info.get('input_size')} px"
        )
        rows = [("rank", "strategy", "score", "fit s", "pred s", "description")]
        for r in self.results_:
            if r["status"] == "ok":
                score = f"{r['mean']:.3f} +- {r['std']:.3f}"
                rows.append(
                    (
                        str(r["rank"]),
                        r["strategy"],
                        score,
                        f"{r['fit_time']:.2f}",
                        f"{r['predict_time']:.2f}",
                        r["description"],
                    )
                )
            else:
                rows.append(("-", r["strategy"], r["status"], "", "", ""))
        scored = [row for row in rows if row[0] != "-"]
        widths = [
            max(len(row[i]) for row in (rows if i < 2 else scored)) for i in range(5)
        ]
        lines = [head]
        for row in rows:
            if row[0] == "-":
                lines.append(f"{'-':<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
                continue
            cells = [f"{c:<{w}}" for c, w in zip(row[:5], widths, strict=True)]
            lines.append("  ".join(cells) + "  " + row[5])
        ext = info.get("extractions") or {}
        if ext:
            parts = [f"{k} {v:.1f} s" for k, v in ext.items()]
            lines.append("codes extracted once per layer: " + ", ".join(parts))
        if self.best_name_ is not None:
            lines.append(
                f"best: {self.best_name_} ({self.best_score_:.3f})"
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
