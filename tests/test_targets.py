"""Targets beyond one label per image: FineTunedRegressor and multi-label y.

Tiny offline tasks a tiny random network can learn, each against a contrast
that cannot be learned (permuted targets, a constant predictor).
"""

import warnings

import numpy as np
import pytest
from conftest import assert_close_paths
from sklearn.base import clone
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, KFold

import sktransfer
from sktransfer import FineTunedClassifier, FineTunedRegressor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"model": "timm/test_efficientnet", "weights": None, "input_size": 32}
REG = {**TINY, "max_epochs": 4, "random_state": 0}


def brightness(n, seed):
    """Noisy gray images; the target is their gray level."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.1, 0.9, size=n)
    noise = rng.normal(0, 40, size=(n, 32, 32, 3))
    X = np.clip(level[:, None, None, None] * 255 + noise, 0, 255).astype(np.uint8)
    return X, level


def tagged(n, n_labels=3, seed=0):
    """Label j is a bright vertical stripe at place j; each image has 1-2."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, n_labels), dtype=int)
    for i in range(n):
        Y[i, rng.choice(n_labels, size=rng.integers(1, 3), replace=False)] = 1
    X = rng.integers(0, 60, size=(n, 32, 32, 3), dtype=np.uint8)
    width = 32 // n_labels
    for j in range(n_labels):
        X[Y[:, j] == 1, :, j * width : (j + 1) * width] += 180
    return X, Y


# ------------------------------------------------------------------ regression
def test_regressor_learns_and_permuted_targets_do_not():
    X, y = brightness(48, 0)
    X_test, y_test = brightness(32, 1)
    reg = FineTunedRegressor(**REG).fit(X, y)
    shuffled = np.random.default_rng(0).permutation(y)
    control = FineTunedRegressor(**REG).fit(X, shuffled)
    r2, r2_control = reg.score(X_test, y_test), control.score(X_test, y_test)
    assert r2 >= 0.5, r2  # 0.82 here
    assert r2_control < r2 - 0.5, (r2, r2_control)
    assert reg.predict(X_test).shape == (32,)
    assert reg.policy_["head_init"] == "ridge" and reg.policy_["augment"] is None
    assert reg.target_mean_ == pytest.approx([y.mean()])
    assert reg.target_scale_ == pytest.approx([y.std()])


def test_regressor_multi_output_losses_and_the_ridge_start():
    X, y = brightness(32, 0)
    Y = np.c_[y, 100 * (1 - y)]  # two targets on very different scales
    for loss in ("squared_error", "huber", "absolute_error"):
        reg = FineTunedRegressor(**REG, loss=loss).fit(X, Y)
        pred = reg.predict(X)
        assert pred.shape == (32, 2) and np.isfinite(pred).all()
    # the head starts from the exact ridge solution on the frozen features: a
    # fit whose steps move nothing already predicts the training targets
    still = FineTunedRegressor(**REG, lr=1e-12, backbone_lr=1e-12).fit(X, Y)
    assert still.score(X, Y) > 0.9
    zero = FineTunedRegressor(**REG, head_init="zeros", lr=1e-12, backbone_lr=1e-12)
    np.testing.assert_allclose(zero.fit(X, Y).predict(X[:4]), [Y.mean(0)] * 4, 1e-5)


def test_regressor_bad_targets_are_clear_errors():
    X, y = brightness(8, 0)
    with pytest.raises(ValueError, match="one value"):
        FineTunedRegressor(**REG).fit(X, y[:5])
    with pytest.raises(ValueError, match="NaN"):
        FineTunedRegressor(**REG).fit(X, np.where(y > 0.5, np.nan, y))
    with pytest.raises(ValueError, match="could not convert|numeric|float"):
        FineTunedRegressor(**REG).fit(X, np.array(["a"] * 8))


def test_regressor_round_trips_batches_and_grid_search(tmp_path):
    X, y = brightness(32, 0)
    reg = FineTunedRegressor(**REG, early_stopping=True).fit(X, y)
    assert reg.best_epoch_ is not None
    loaded = sktransfer.load(sktransfer.save(reg, tmp_path / "reg.skt"))
    assert isinstance(loaded, FineTunedRegressor)
    assert_close_paths(loaded.predict(X), reg.predict(X))
    one_by_one = np.concatenate([reg.predict(X[i : i + 1]) for i in range(4)])
    assert_close_paths(one_by_one, reg.predict(X[:4]))
    grid = GridSearchCV(
        FineTunedRegressor(**{**REG, "max_epochs": 1}),
        {"train_layers": ["head", 2]},
        cv=KFold(2),
    ).fit(X, y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


# ------------------------------------------------------------------ multi-label
def test_multilabel_learns_well_above_a_constant_predictor():
    X, Y = tagged(48, seed=0)
    X_test, Y_test = tagged(32, seed=1)
    clf = FineTunedClassifier(**TINY, max_epochs=4, random_state=0).fit(X, Y)
    pred = clf.predict(X_test)
    assert pred.shape == Y_test.shape and set(np.unique(pred)) <= {0, 1}
    proba = clf.predict_proba(X_test)
    assert proba.shape == Y_test.shape and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    f1 = f1_score(Y_test, pred, average="micro")
    constant = f1_score(Y_test, np.ones_like(Y_test), average="micro")  # best const
    assert f1 > constant + 0.2, (f1, constant)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.decision_function(X_test).shape == Y_test.shape


@pytest.mark.parametrize("head", ["cosine", "linear"])
def test_multilabel_head_starts_per_label(head):
    """class_means (cosine) / lp (linear) per label: before any step, each
    label's score already ranks the images that carry it first."""
    X, Y = tagged(36, seed=2)
    clf = FineTunedClassifier(
        **TINY, head=head, lr=1e-12, backbone_lr=1e-12, max_epochs=1, random_state=0
    ).fit(X, Y)
    scores = clf.decision_function(X)
    for j in range(Y.shape[1]):
        assert scores[Y[:, j] == 1, j].mean() > scores[Y[:, j] == 0, j].mean()


def test_multilabel_split_keeps_every_label_in_training():
    X, Y = tagged(24, seed=3)
    Y = np.c_[Y, np.zeros(24, int)]
    Y[5, 3] = 1  # a label on one image only: it must stay in training
    clf = FineTunedClassifier(**TINY, early_stopping=True, validation_fraction=0.5)
    clf._multilabel, clf.classes_ = True, np.arange(4)
    warned = 0
    for seed in range(8):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train, valid = clf._split(Y.astype(np.float32), seed)
        assert Y[train].any(0).all() and len(valid)
        assert not np.intersect1d(train, valid).size
        warned += any("label(s)" in str(w.message) for w in caught)
    assert 0 < warned < 8  # the lone image was drawn for validation and given back
    fitted = FineTunedClassifier(
        **TINY, max_epochs=2, early_stopping=True, random_state=0
    ).fit(X, Y[:, :3])
    assert fitted.best_epoch_ is not None


def test_multilabel_f1_scoring_in_grid_search():
    X, Y = tagged(24, seed=3)
    grid = GridSearchCV(
        FineTunedClassifier(**TINY, max_epochs=1, random_state=0),
        {"head": ["cosine", "linear"]},
        scoring="f1_micro",
        cv=KFold(2),
    ).fit(X, Y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    macro = clone(grid).set_params(scoring="f1_macro").fit(X, Y)
    assert np.isfinite(macro.best_score_)


def test_multilabel_bad_settings_are_clear_errors():
    X, Y = tagged(8)
    with pytest.raises(ValueError, match="monitor='valid_loss'"):
        FineTunedClassifier(**TINY, monitor="valid_acc").fit(X, Y)
    with pytest.raises(ValueError, match="sample_weight"):
        FineTunedClassifier(**TINY, class_weight="balanced").fit(X, Y)
    with pytest.raises(ValueError, match="indicator"):
        FineTunedClassifier(**TINY).fit(X, Y * 2)


def test_multilabel_round_trip(tmp_path):
    X, Y = tagged(16)
    clf = FineTunedClassifier(**TINY, max_epochs=1, random_state=0).fit(X, Y)
    loaded = sktransfer.load(sktransfer.save(clf, tmp_path / "ml.skt"))
    assert_close_paths(loaded.predict_proba(X), clf.predict_proba(X))
    assert loaded.predict(X).shape == Y.shape
