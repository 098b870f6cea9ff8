"""Label and sample-weight checks shared by every classifier of the package."""

import warnings

import numpy as np
from sklearn.utils.validation import _check_sample_weight

__all__ = [
    "check_label_kind",
    "check_no_missing_labels",
    "check_sample_weight",
    "warn_unlabeled_marker",
]


def check_no_missing_labels(y):
    """Raise a clear ``ValueError`` when object labels hold ``None`` or NaN.

    sklearn's own checks catch NaN in float labels; in object arrays a ``None``
    otherwise surfaces as ``'<' not supported between 'NoneType' and 'str'``.
    """
    y = np.asarray(y, dtype=object if np.asarray(y).dtype.kind == "O" else None)
    if y.dtype.kind != "O":
        return
    flat = y.ravel()
    missing = [i for i, v in enumerate(flat) if v is None or v != v]
    if missing:
        raise ValueError(
            f"y contains {len(missing)} missing label(s) (None or NaN), e.g. at "
            f"positions {missing[:5]}; drop those samples or give them a label."
        )


def check_sample_weight(sample_weight, X, dtype=np.float64):
    """Validated per-sample weights: finite, non-negative, not all zero.

    A negative weight would flip the sign of a sample's loss (or of its share of
    a class mean), so it is refused instead of being silently used.
    """
    try:
        return _check_sample_weight(
            sample_weight, X, dtype=dtype, ensure_non_negative=True
        )
    except ValueError as exc:
        if sample_weight is None:
            raise
        raise ValueError(
            f"invalid sample_weight: {exc} Weights must be finite, >= 0 and not "
            f"all zero, one per sample; drop samples instead of giving them "
            f"negative weights."
        ) from None


def _kind(values):
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        return "numbers"
    if values.dtype.kind in "US" or all(isinstance(v, str) for v in values.ravel()):
        return "strings"
    return f"{values.dtype} objects"


def check_label_kind(classes, y):
    """Refuse labels of another kind than the ``classes_`` seen so far.

    ``np.unique`` of ints and strings together silently turns ``[0, 1]`` into
    ``['0', '1']``; an incremental fit must keep one label type.
    """
    old, new = _kind(classes), _kind(y)
    if old != new:
        raise TypeError(
            f"y holds {new} but the classifier was fitted on {old} "
            f"(classes_={list(classes)[:5]}); use one label type throughout, or "
            f"call fit to start again."
        )


def warn_unlabeled_marker(y, estimator, fix):
    """Warn when numeric labels contain -1, sklearn's mark of unlabelled rows."""
    y = np.asarray(y)
    if y.dtype.kind in "iuf" and np.any(y == -1):
        warnings.warn(
            f"y contains -1, scikit-learn's marker for unlabelled samples; "
            f"{estimator} treats -1 as a class of its own here. {fix}",
            UserWarning,
            stacklevel=3,
        )
