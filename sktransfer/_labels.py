"""Label checks shared by the classifiers."""

import numpy as np

__all__ = ["check_no_missing_labels"]


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
