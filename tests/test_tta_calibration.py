"""Test-time augmentation (``tta``) and temperature scaling (``calibration``)."""

import numpy as np
import pytest
import torch
from conftest import FT_TINY, assert_close_paths, bands
from sklearn.utils._param_validation import InvalidParameterError

from sktransfer import FineTunedClassifier, FineTunedRegressor, load, save
from sktransfer._heads import fit_temperature


@pytest.fixture(scope="module")
def fitted():
    X, y = bands(48, n_classes=3, size=16)
    clf = FineTunedClassifier(
        **FT_TINY,
        early_stopping=True,
        validation_fraction=0.25,
        calibration="temperature",  # "auto" leaves splits under 100 images
    )
    return clf.fit(X, y), X, y


def _with(clf, **params):
    return clf.set_params(**params)


def test_flip_averages_the_image_and_its_mirror(fitted):
    clf, X, _ = fitted
    plain = _with(clf, tta=None).decision_function(X)
    mirrored = clf.decision_function(np.ascontiguousarray(X[:, :, ::-1]))
    flipped = _with(clf, tta="flip").decision_function(X)
    # the views run through the whole network; the un-augmented call too
    # (images of a fit predict from its stores: another path)
    assert_close_paths(flipped, (plain + mirrored) / 2)
    assert np.abs(flipped - plain).max() > 1e-4  # the mirror view counted
    # a left-right symmetric image is its own mirror
    sym = np.concatenate([X[:4, :, :8], X[:4, :, :8][:, :, ::-1]], axis=2)
    assert_close_paths(
        _with(clf, tta="flip").decision_function(sym),
        _with(clf, tta=None).decision_function(sym),
    )
    _with(clf, tta=None)


def test_views_are_seeded_by_image_content(fitted):
    """The same image gets the same views in any batch, order and call; the
    caller's global RNG does not move."""
    clf, X, _ = fitted
    _with(clf, tta=3, batch_size=8)
    state = torch.random.get_rng_state()
    full = clf.predict_proba(X)
    assert torch.equal(state, torch.random.get_rng_state())
    again = clf.predict_proba(X)
    np.testing.assert_array_equal(full, again)  # one path, same batches
    order = np.random.default_rng(0).permutation(len(X))
    shuffled = clf.predict_proba(X[order])
    assert_close_paths(shuffled, full[order])  # other batches: fp32 rounding
    single = clf.predict_proba(X[5:6])
    assert_close_paths(single, full[5:6], scale=np.abs(full).max())
    # the views are augmented: 3 random views differ from the flip's one
    flip = _with(clf, tta="flip").predict_proba(X)
    assert np.abs(flip - full).max() > 1e-4
    _with(clf, tta=None, batch_size=FT_TINY["batch_size"])


def test_predict_is_the_argmax_of_the_averaged_outputs(fitted):
    clf, X, _ = fitted
    _with(clf, tta=2)
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(1)])
    assert np.allclose(proba.sum(1), 1)
    _with(clf, tta=None)


@pytest.mark.parametrize("tta", ["rotate", 0, 1.5, True])
def test_bad_tta_is_refused(fitted, tta):
    clf, X, _ = fitted
    clf = FineTunedClassifier(**FT_TINY, tta=tta)
    with pytest.raises((InvalidParameterError, ValueError), match="tta"):
        clf.fit(X[:8], np.arange(8) % 2)


def test_int_views_need_a_training_augmentation():
    X, _ = bands(16, size=16)
    values = np.linspace(0, 1, 16)
    with pytest.raises(ValueError, match="fit without augmentation"):
        FineTunedRegressor(**FT_TINY, tta=2).fit(X, values)  # before training
    reg = FineTunedRegressor(**FT_TINY).fit(X, values)  # augment "auto": none
    assert reg.policy_["augment"] is None
    with pytest.raises(ValueError, match="fit without augmentation.*tta='flip'"):
        reg.set_params(tta=2).predict(X)
    flipped = reg.set_params(tta="flip").predict(X)
    assert flipped.shape == values.shape and np.isfinite(flipped).all()


def test_fit_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true = torch.as_tensor(rng.normal(0, 2, size=(4000, 5)))
    labels = torch.distributions.Categorical(logits=true).sample()
    # overconfident logits (3x the true ones) are calibrated by T = 3
    assert abs(fit_temperature(3 * true, labels) - 3) < 0.25
    assert abs(fit_temperature(true / 2, labels) - 0.5) < 0.05
    tags = torch.bernoulli(torch.sigmoid(true))
    assert abs(fit_temperature(4 * true, tags, multilabel=True) - 4) < 0.4


def test_a_small_split_without_errors_keeps_the_temperature_near_one():
    """All 20 validation images right and confident: the log-loss alone falls
    as T goes to 0 (certainty); the prior keeps T near 1."""
    logits = torch.zeros(20, 3)
    labels = torch.arange(20) % 3
    logits[torch.arange(20), labels] = 4.0
    assert 0.6 < fit_temperature(logits, labels) <= 1.0
    assert 0.6 < fit_temperature(logits, torch.eye(3)[labels], multilabel=True) <= 1.0


def test_temperature_is_fit_on_the_validation_split_only(fitted):
    clf, X, y = fitted
    assert clf.temperature_ != 1.0
    logits = clf.decision_function(X)
    scaled = torch.softmax(torch.as_tensor(logits) / clf.temperature_, 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), scaled, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[logits.argmax(1)])
    plain = FineTunedClassifier(**FT_TINY).fit(X, y)  # no validation split
    assert plain.temperature_ == 1.0
    off = FineTunedClassifier(**FT_TINY, early_stopping=True, calibration=None)
    assert off.fit(X, y).temperature_ == 1.0


def test_multilabel_temperature_keeps_the_predictions():
    X, y = bands(40, n_classes=4, size=16)
    tags = np.stack([y % 2, y // 2], axis=1)
    clf = FineTunedClassifier(
        **FT_TINY,
        early_stopping=True,
        validation_fraction=0.3,
        calibration="temperature",
    )
    clf.fit(X, tags)
    assert clf.temperature_ != 1.0
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict(X), (proba > 0.5).astype(int))


def test_tta_and_temperature_survive_save_and_load(fitted, tmp_path):
    clf, X, _ = fitted
    _with(clf, tta="flip")
    want = clf.predict_proba(X)
    save(clf, tmp_path / "m.skt")
    back = load(tmp_path / "m.skt")
    assert back.tta == "flip" and back.temperature_ == clf.temperature_
    assert_close_paths(back.predict_proba(X), want)
    _with(clf, tta=None)


def test_auto_calibration_needs_a_validation_split_of_100_images():
    X, y = bands(200, n_classes=2, size=16)
    kw = {**FT_TINY, "max_epochs": 1, "early_stopping": True}
    small = FineTunedClassifier(**kw, validation_fraction=0.25).fit(X, y)
    assert small.temperature_ == 1.0  # 50 validation images
    large = FineTunedClassifier(**kw, validation_fraction=0.5).fit(X, y)
    assert large.temperature_ != 1.0  # 100 validation images
