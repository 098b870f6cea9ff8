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

    Attributes
    ----------
    results_ : list of dict
        One row per strategy: ``strategy``, ``kind``, ``status`` ("ok",
        "unavailable: ...", "skipped: ...", "failed: ..."), ``mean`` / ``std`` of
        the fold scores, ``scores`` (per fold), ``fit_time`` / ``predict_time``
        (mean seconds per fold; for codes strategies the head only),
        ``extract_time`` (seconds spent once extracting the shared codes),
        ``layer``, ``description``.
    best_name_ : str or None
        The strategy with the highest mean score.
    best_score_ : float
    best_estimator_ : estimator or None
        The winner refit on all data, taking images (for codes strategies a
        ``Pipeline(CNNFeatureExtractor, head)``).
    info_ : dict
        Scoring, number of folds, samples and classes, backbone, total time.
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
        """Write the table to ``path`` as CSV (no pandas needed)."""
        import csv

        cols = ["rank", *_COLUMNS, "layer", "scores"]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(cols)
            for r in self.results_:
                row = [r.get(c) for c in cols]
                row[-1] = " ".join(f"{s:.4f}" for s in (r.get("scores") or []))
                writer.writerow(row)

    def plot(self, ax=None):
        """Horizontal bar chart of mean score with std error bars; returns the Axes."""
        import matplotlib.pyplot as plt

        ok = [r for r in self.results_ if r["status"] == "ok"][::-1]
        if ax is None:
            _, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(ok), 2) + 1.3))
        names = [r["strategy"] for r in ok]
        means = [r["mean"] for r in ok]
        stds = [r["std"] for r in ok]
        colors = ["grey" if r["kind"] == "pixels" else "C0" for r in ok]
        if ok and ok[-1]["strategy"] == self.best_name_:
            colors[-1] = "C2"
        ax.barh(names, means, xerr=stds, color=colors, capsize=3)
        for i, (m, s) in enumerate(zip(means, stds, strict=True)):
            ax.text(m + s + 0.005, i, f"{m:.3f}", va="center", fontsize=9)
        if means:
            lo = min(m - s for m, s in zip(means, stds, strict=True))
            hi = max(m + s for m, s in zip(means, stds, strict=True))
            ax.set_xlim(max(0.0, lo - 0.05) if lo > 0 else lo - 0.05, hi + 0.06)
        info = self.info_
        ax.set_xlabel(
            f"{info.get('scoring')} ({info.get('n_splits')}-fold CV, mean +- std)"
        )
        ax.set_title(
            f"{info.get('model')}: {info.get('n_samples')} images, "
            f"{info.get('n_classes')} classes",
            fontsize=10,
        )
        ax.figure.tight_layout()
        return ax

    # ------------------------------------------------------------- printing
    def format_table(self):
        """The readable table that ``str(report)`` returns."""
        info = self.info_
        head = (
            f"{info.get('n_splits')}-fold CV {info.get('scoring')} on "
            f"{info.get('n_samples')} images, {info.get('n_classes')} classes; "
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
