"""compare_strategies beyond one label per image: real values and multi-label.

The task is read from ``y`` (``type_of_target``); each task has its strategies,
its metric (R², micro-F1) and KFold. Tiny backbone and images; fine-tuning
strategies keep their registry settings except for 2 epochs.
"""

import dataclasses

import numpy as np
import pytest
from conftest import TINY
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline

from sktransfer import (
    CNNFeatureExtractor,
    FineTunedClassifier,
    FineTunedRegressor,
    compare_strategies,
)
from sktransfer._compare import _make_splits, target_task
from sktransfer.model_selection import (
    STRATEGIES,
    StrategyContext,
    auto_strategies,
    available_strategies,
    resolve_strategies,
)

pytestmark = pytest.mark.usefixtures("eager_extraction", "one_torch_thread")

REGRESSION = set(available_strategies("regression"))
MULTILABEL = set(available_strategies("multilabel"))


@pytest.fixture(scope="module", autouse=True)
def short_training():
    """Registry fine-tune factories, unchanged but for 2 epochs (module-wide, so
    the module-scoped reports get them too)."""
    mp = pytest.MonkeyPatch()
    for name in ("finetune_regressor", "finetune_head"):
        strat = STRATEGIES[name]

        def factory(ctx, _real=strat.factory):
            return _real(ctx).set_params(max_epochs=2)

        mp.setitem(STRATEGIES, name, dataclasses.replace(strat, factory=factory))
    yield
    mp.undo()


def brightness(n=16, seed=0):
    """Noisy gray images; the target is their gray level."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.1, 0.9, size=n)
    noise = rng.normal(0, 30, size=(n, 16, 16, 3))
    X = np.clip(level[:, None, None, None] * 255 + noise, 0, 255).astype(np.uint8)
    return X, level


def tagged(n=16, seed=0):
    """Label j is a bright vertical stripe at place j; each image has 1-2."""
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, 3), dtype=int)
    for i in range(n):
        Y[i, rng.choice(3, size=rng.integers(1, 3), replace=False)] = 1
    X = rng.integers(0, 60, size=(n, 18, 18, 3), dtype=np.uint8)
    for j in range(3):
        X[Y[:, j] == 1, :, 6 * j : 6 * (j + 1)] += 180
    return X, Y


# ------------------------------------------------------------- the task of y
@pytest.mark.parametrize(
    "y, task",
    [
        (np.array([0.5, 1.25, 2.0, 0.1]), "regression"),
        (np.array([[0.5, 3.0], [1.5, 2.0], [0.2, 1.0]]), "regression"),
        (np.array([[0, 1, 1], [1, 0, 0], [1, 1, 0]]), "multilabel"),
        (np.array(["cat", "dog", "cat"]), "classification"),
        (np.array([0, 1, 2, 1]), "classification"),
        (np.array([1.0, 2.0, 3.0]), "classification"),  # integers: classes
        (np.array([0.0, np.nan, 1.0]), "classification"),  # named as missing
    ],
)
def test_task_is_read_from_the_targets(y, task):
    assert target_task(y) == task
    assert target_task(y, "regression") == "regression"  # the caller's wins


def test_integer_columns_need_the_task_said():
    with pytest.raises(ValueError, match="task='regression'"):
        target_task(np.array([[1, 2], [3, 0], [2, 2]]))
    with pytest.raises(ValueError, match="missing or infinite"):
        target_task(np.array([[0.5, np.nan], [1.5, 2.0]]))


def test_values_and_indicators_get_kfold_labels_stay_stratified():
    _, y = brightness(10)
    want = list(KFold(2, shuffle=True, random_state=0).split(np.zeros((10, 1))))
    got = _make_splits(2, y, 0, 0, "regression")
    for (a, b), (c, d) in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert len(_make_splits(5, y[:3], 0, 0, "multilabel")) == 3  # reduced


# ----------------------------------------------------------------- regression
@pytest.fixture(scope="module")
def regression_report():
    X, y = brightness()
    return compare_strategies(X, y, strategies="all", cv=2, random_state=0, **TINY)


def test_regression_ranks_its_strategies_by_r2(regression_report):
    report = regression_report
    assert report.task_ == "regression" and report.scoring_ == "r2"
    assert report.info_["n_targets"] == 1 and report.info_["n_classes"] is None
    assert {r["strategy"] for r in report.results_} == REGRESSION
    assert REGRESSION >= {"codes_ridge", "codes_svr", "codes_knn", "earlier_ridge"}
    for r in report.results_:
        assert r["status"] == "ok", (r["strategy"], r["status"])
        assert len(r["scores"]) == 2 and np.isfinite(r["scores"]).all()
    means = [r["mean"] for r in report.results_]
    assert means == sorted(means, reverse=True)
    rows = {r["strategy"]: r for r in report.results_}
    assert rows["codes_ridge"]["mean"] > 0.5  # the gray level is in the codes
    assert rows["finetune_regressor"]["layer"] == "images at 32 px"
    text = str(report)
    assert text.startswith("regression: 2-fold CV r2 on 16 images, 1 target;")
    X, y = brightness(4, seed=1)
    pred = report.best_estimator_.predict(X)
    assert pred.shape == (4,) and np.isfinite(pred).all()


def test_regression_strategy_builds_the_regressor():
    ctx = StrategyContext(**TINY, n_samples=10, task="regression", random_state=2)
    est = STRATEGIES["finetune_regressor"].factory(ctx)
    assert type(est) is FineTunedRegressor
    est._validate_params()
    defaults = FineTunedRegressor().get_params()
    for name in ("train_layers", "lr", "head_init", "augment"):
        assert est.get_params()[name] == defaults[name]  # the regressor's own
    assert (est.input_size, est.random_state, est.verbose) == (32, 2, 0)


def test_multi_output_regression(regression_report):
    X, y = brightness()
    Y = np.c_[y, 100 * (1 - y) ** 2]  # two targets on very different scales
    names = ["codes_ridge", "codes_svr", "codes_knn", "earlier_ridge"]
    report = compare_strategies(X, Y, strategies=names, cv=2, random_state=0, **TINY)
    assert report.task_ == "regression" and report.info_["n_targets"] == 2
    assert all(r["status"] == "ok" for r in report.results_), report
    assert all(np.isfinite(r["mean"]) for r in report.results_)
    assert report.best_estimator_.predict(X[:3]).shape == (3, 2)
    assert "16 images, 2 targets" in str(report)


# ----------------------------------------------------------------- multi-label
def test_multilabel_ranks_by_micro_f1():
    X, Y = tagged()
    names = ["codes_ovr", "earlier_ovr", "pixels_ovr", "finetune_head"]
    report = compare_strategies(X, Y, strategies=names, cv=2, random_state=0, **TINY)
    assert report.task_ == "multilabel" and report.scoring_ == "f1_micro"
    assert report.info_["n_classes"] == report.info_["n_targets"] == 3
    assert str(report).startswith("multilabel: 2-fold CV f1_micro on 16 images, 3 ")
    rows = {r["strategy"]: r for r in report.results_}
    assert set(rows) == set(names) and all(r["status"] == "ok" for r in rows.values())
    # the scores are micro-F1 on shuffled KFold: what cross_val_score says
    pipe = Pipeline(
        [
            ("cnn", CNNFeatureExtractor(**TINY)),
            ("head", STRATEGIES["codes_ovr"].factory(StrategyContext(**TINY))),
        ]
    )
    cv = KFold(2, shuffle=True, random_state=0)
    want = cross_val_score(pipe, X, Y, cv=cv, scoring="f1_micro")
    np.testing.assert_allclose(rows["codes_ovr"]["scores"], want, atol=1e-12)
    constant = 2 * Y.mean() / (1 + Y.mean())  # micro-F1 of predicting every label
    assert rows["codes_ovr"]["mean"] > constant
    pred = report.best_estimator_.predict(X[:4])
    assert pred.shape == (4, 3) and set(np.unique(pred)) <= {0, 1}
    est = STRATEGIES["finetune_head"].factory(StrategyContext(**TINY))
    assert type(est) is FineTunedClassifier  # on the indicator itself


# --------------------------------------------------------- names and targets
@pytest.mark.parametrize(
    "data, names, wrong, task",
    [
        (brightness, "codes_ridge,codes_logreg", "codes_logreg", "regression"),
        (tagged, ["codes_ovr", "codes_svc"], "codes_svc", "multilabel"),
        (tagged, "codes_ridge", "codes_ridge", "multilabel"),
    ],
)
def test_a_name_not_serving_the_task_fails_up_front(
    data, names, wrong, task, monkeypatch
):
    calls = []
    monkeypatch.setattr(CNNFeatureExtractor, "fit", lambda self, *a: calls.append(1))
    X, y = data()
    with pytest.raises(ValueError, match=rf"\['{wrong}'\] do not serve the {task}"):
        compare_strategies(X, y, strategies=names, cv=2, **TINY)
    assert calls == []
    with pytest.raises(ValueError, match="do not serve the classification task"):
        resolve_strategies("codes_ridge", 10, 2)


@pytest.mark.parametrize(
    "y, task, match",
    [
        (np.ones(8), "regression", "one value for every image"),
        (np.array(["a", "b"] * 4), "regression", "must be finite numbers"),
        (np.c_[np.arange(8) % 2, np.zeros(8)], "multilabel", r"column\(s\) \[1\]"),
        (np.c_[np.arange(8) % 2, np.arange(8) % 3], "multilabel", "0 and 1 only"),
        (np.arange(8) % 2, "multilabel", "2-D 0/1 indicator"),
    ],
)
def test_bad_targets_for_the_task_are_clear_errors(y, task, match):
    X, _ = brightness(8)
    with pytest.raises(ValueError, match=match):
        compare_strategies(X, y, task=task, strategies="codes_ridge", cv=2, **TINY)


def test_auto_per_task_and_time_budget():
    assert auto_strategies(50, 0, "regression")[:2] == ["codes_ridge", "earlier_ridge"]
    assert "finetune_regressor" in auto_strategies(50, 0, "regression")
    ml = auto_strategies(50, 3, "multilabel")
    assert ml == ["codes_ovr", "earlier_ovr", "finetune_defaults", "pixels_ovr"]
    assert "finetune_top2" in auto_strategies(3000, 3, "multilabel")
    for task in ("regression", "multilabel"):
        assert set(auto_strategies(50000, 3, task)) <= set(available_strategies(task))
    X, y = brightness()
    report = compare_strategies(
        X, y, cv=2, time_budget=0, strategies="pixels_ridge,finetune_regressor", **TINY
    )
    status = {r["strategy"]: r["status"] for r in report.results_}
    assert status["pixels_ridge"] == "ok"
    assert status["finetune_regressor"].startswith("skipped (time budget")
