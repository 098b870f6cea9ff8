"""What ``sktransfer predict`` makes of a loaded model: its kind, its
predictions for image files, and the CSV table and summary lines they become.

``_final_step`` (the estimator at the end of nested pipelines) is also where
``compare --targets --save`` records the CSV's column names (``target_names_``)
that the table names its columns after.

Only the standard library is imported at module level (``sktransfer --help``
imports no numpy, torch or scikit-learn); the rest is imported where used.
"""

from __future__ import annotations


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


def _final_step(model):
    """The last estimator of (nested) pipelines: the one predicting."""
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline):
        model = model[-1]
    return model
