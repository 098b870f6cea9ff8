"""Inputs in the forms scikit-learn users pass them."""

import numpy as np
import pandas as pd
from conftest import TINY, save_pngs
from sklearn.compose import ColumnTransformer

from sktransfer import CNNFeatureExtractor


def test_column_transformer_over_a_frame_of_paths(tmp_path):
    """["path"] hands the extractor a one-column DataFrame: n images, not an
    (n, 1) array error; the codes are those of the plain list of paths."""
    X = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), np.uint8)
    paths = save_pngs(X, tmp_path)
    frame = pd.DataFrame({"path": paths, "age": np.arange(6.0)})
    ct = ColumnTransformer(
        [
            ("img", CNNFeatureExtractor(**TINY), ["path"]),
            ("num", "passthrough", ["age"]),
        ]
    )
    Z = ct.fit_transform(frame)
    codes = CNNFeatureExtractor(**TINY).fit_transform(paths)
    np.testing.assert_array_equal(Z[:, :-1], codes)  # one compute path
    np.testing.assert_array_equal(Z[:, -1], frame["age"])
    assert ct.get_feature_names_out()[0].startswith("img__")
    # the same one-column form as an object array
    one_column = np.asarray(paths, dtype=object)[:, None]
    np.testing.assert_array_equal(
        CNNFeatureExtractor(**TINY).fit_transform(one_column), codes
    )
