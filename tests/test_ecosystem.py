"""The tools scikit-learn users already call, on fitted sktransfer models.

skops.io refuses the image estimators with a TypeError that points to
``sktransfer.save`` (it used to abort the interpreter), the few-shot heads
round-trip through it, and pickle, ``copy.deepcopy``, joblib with compression
and cloudpickle (dask) keep every fitted model's outputs.
"""

import copy
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import joblib
import numpy as np
import pytest
import skops.io as sio
from conftest import FT_TINY, TINY, assert_close_paths
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
)

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
Y = np.arange(16) % 2
FEATS = RNG.normal(size=(16, 6))


@pytest.fixture(scope="module")
def fitted():
    return {
        "pipeline": make_pipeline(
            CNNFeatureExtractor(**TINY), LogisticRegression()
        ).fit(X, Y),
        "finetuned": FineTunedClassifier(**FT_TINY).fit(X, Y),
        "extractor": CNNFeatureExtractor(**TINY).fit(X),
    }


def _out(model, data):
    return (
        model.transform(data)
        if hasattr(model, "transform") and not hasattr(model, "predict")
        else model.predict_proba(data)
    )


def test_skops_dump_of_a_pipeline_is_a_type_error_not_an_abort(tmp_path):
    """In a subprocess: an abort would kill it (and would have killed pytest)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        import numpy as np, skops.io as sio
        from conftest import TINY
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sktransfer import CNNFeatureExtractor
        X = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)
        pipe = make_pipeline(CNNFeatureExtractor(**TINY), LogisticRegression())
        pipe.fit(X, np.arange(8) % 2).predict(X)
        try:
            sio.dump(pipe, {str(tmp_path / "m.skops")!r})
        except TypeError as exc:
            print("TypeError:", exc)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "TypeError: skops.io cannot store a CNNFeatureExtractor" in res.stdout
    assert "sktransfer.save" in res.stdout


@pytest.mark.parametrize("name", ["finetuned", "extractor"])
def test_skops_refuses_image_estimators_through_its_dispatch(fitted, name):
    with pytest.raises(TypeError, match=r"sktransfer\.save\(model, path\)"):
        sio.dumps(fitted[name])
    pickle.dumps(fitted[name])  # __getstate__ untouched: pickle still works


@pytest.mark.parametrize("head", [PrototypeClassifier, CosineSoftmaxClassifier])
def test_skops_round_trips_the_few_shot_heads(head):
    model = head().fit(FEATS, Y)
    data = sio.dumps(model)
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    np.testing.assert_array_equal(
        loaded.predict_proba(FEATS), model.predict_proba(FEATS)
    )


ROUND_TRIPS = {
    "pickle": lambda m, p: pickle.loads(pickle.dumps(m)),
    "deepcopy": lambda m, p: copy.deepcopy(m),
    "joblib compress=3": lambda m, p: (
        joblib.dump(m, p / "m.joblib", compress=3),
        joblib.load(p / "m.joblib"),
    )[1],
    "cloudpickle": lambda m, p: cloudpickle.loads(cloudpickle.dumps(m)),
}


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
@pytest.mark.parametrize("name", ["pipeline", "finetuned", "extractor"])
def test_round_trips_keep_outputs(fitted, name, how, tmp_path):
    model = fitted[name]
    loaded = ROUND_TRIPS[how](model, tmp_path)
    assert loaded is not model
    if name == "finetuned":
        # fitted here, it may predict from the activation stores; the copy has
        # no derived state and runs the whole network: two compute paths
        assert_close_paths(loaded.decision_function(X), model.decision_function(X))
    else:
        np.testing.assert_array_equal(_out(loaded, X), _out(model, X))


def test_clone_of_a_fitted_estimator_is_unfitted(fitted):
    from sklearn.exceptions import NotFittedError

    fresh = clone(fitted["finetuned"])
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    assert fresh.get_params() == fitted["finetuned"].get_params()
