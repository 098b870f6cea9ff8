"""Episodic and class-disjoint splitters, score summaries."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats
from sklearn.model_selection import cross_val_score, cross_validate

from sktransfer import PrototypeClassifier
from sktransfer.model_selection import (
    ClassDisjointSplit,
    EpisodicSplit,
    class_disjoint_split,
    summarize_scores,
)


@pytest.fixture(scope="module")
def labelled():
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(list("abcdefgh")), 12)
    centers = rng.normal(size=(8, 6)) * 3
    X = centers[np.searchsorted(np.unique(y), y)] + rng.normal(size=(len(y), 6))
    return X, y


@pytest.mark.parametrize("n_way, k_shot, n_query", [(5, 1, 15 - 5), (3, 5, 4)])
def test_episode_properties(labelled, n_way, k_shot, n_query):
    X, y = labelled
    cv = EpisodicSplit(n_way, k_shot, n_query, n_episodes=20, random_state=0)
    assert cv.get_n_splits() == 20
    episodes = list(cv.split(X, y))
    assert len(episodes) == 20
    class_sets = set()
    for support, query in episodes:
        assert np.intersect1d(support, query).size == 0
        assert len(np.unique(support)) == len(support) == n_way * k_shot
        assert len(np.unique(query)) == len(query) == n_way * n_query
        classes, counts = np.unique(y[support], return_counts=True)
        assert len(classes) == n_way
        assert_array_equal(counts, k_shot)
        q_classes, q_counts = np.unique(y[query], return_counts=True)
        assert_array_equal(q_classes, classes)
        assert_array_equal(q_counts, n_query)
        class_sets.add(tuple(classes))
    assert len(class_sets) > 1  # episodes differ


def test_episodes_reproducible(labelled):
    X, y = labelled
    a = list(EpisodicSplit(n_query=5, random_state=3).split(X, y))
    b = list(EpisodicSplit(n_query=5, random_state=3).split(X, y))
    c = list(EpisodicSplit(n_query=5, random_state=4).split(X, y))
    for (s1, q1), (s2, q2) in zip(a, b, strict=False):
        assert_array_equal(s1, s2)
        assert_array_equal(q1, q2)
    assert any(
        not np.array_equal(s1, s3) for (s1, _), (s3, _) in zip(a, c, strict=False)
    )


def test_episodes_skip_small_classes_and_complain(labelled):
    X, y = labelled
    y = y.copy()
    y[y == "a"] = np.array(["a", "z"] * 6)  # a and z: 6 examples each
    cv = EpisodicSplit(n_way=3, k_shot=5, n_query=5, n_episodes=30, random_state=0)
    for support, _ in cv.split(X, y):
        assert not set(y[support]) & {"a", "z"}
    with pytest.raises(ValueError, match="n_way=10 classes"):
        next(EpisodicSplit(n_way=10, k_shot=1, n_query=1).split(X, y))
    with pytest.raises(ValueError, match="k_shot"):
        next(EpisodicSplit(k_shot=0).split(X, y))


def test_episodes_with_cross_validate(labelled):
    X, y = labelled
    cv = EpisodicSplit(n_way=5, k_shot=2, n_query=5, n_episodes=8, random_state=0)
    scores = cross_val_score(PrototypeClassifier(), X, y, cv=cv)
    assert scores.shape == (8,)
    assert scores.mean() > 0.8
    res = cross_validate(
        PrototypeClassifier(), X, y, cv=cv, scoring=["accuracy", "neg_log_loss"]
    )
    assert res["test_neg_log_loss"].shape == (8,)


def test_class_disjoint_splitter(labelled):
    X, y = labelled
    cv = ClassDisjointSplit(n_splits=4, n_novel_classes=3, random_state=0)
    assert cv.get_n_splits() == 4
    novel_sets = set()
    for base, novel in cv.split(X, y):
        assert np.intersect1d(y[base], y[novel]).size == 0
        assert len(np.unique(y[novel])) == 3
        assert_array_equal(np.sort(np.concatenate([base, novel])), np.arange(len(y)))
        novel_sets.add(tuple(np.unique(y[novel])))
    assert len(novel_sets) > 1
    frac = ClassDisjointSplit(n_splits=1, n_novel_classes=0.25, random_state=0)
    _, novel = next(frac.split(X, y))
    assert len(np.unique(y[novel])) == 2
    with pytest.raises(ValueError, match="at least one base"):
        next(ClassDisjointSplit(n_novel_classes=8).split(X, y))


def test_class_disjoint_split_function(labelled):
    _, y = labelled
    base, novel = class_disjoint_split(y, novel_classes=["g", "h"])
    assert set(y[novel]) == {"g", "h"}
    assert "g" not in set(y[base])
    base2, novel2 = class_disjoint_split(y, n_novel_classes=3, random_state=0)
    assert len(np.unique(y[novel2])) == 3
    again = class_disjoint_split(y, n_novel_classes=3, random_state=0)
    assert_array_equal(novel2, again[1])
    with pytest.raises(ValueError, match="not in y"):
        class_disjoint_split(y, novel_classes=["q"])
    with pytest.raises(ValueError, match="not both"):
        class_disjoint_split(y, novel_classes=["g"], n_novel_classes=2)


def test_summarize_scores():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.5, 0.9, size=200)
    s = summarize_scores(scores)
    half = stats.t.ppf(0.975, 199) * scores.std(ddof=1) / np.sqrt(200)
    assert_allclose(
        [s.mean, s.ci, s.low, s.high],
        [scores.mean(), half, scores.mean() - half, scores.mean() + half],
    )
    assert s.n == 200 and s.confidence == 0.95
    assert str(s) == f"{scores.mean():.3f} +/- {half:.3f}"
    assert summarize_scores(scores, confidence=0.99).ci > s.ci
    with pytest.raises(ValueError, match="confidence"):
        summarize_scores(scores, confidence=1.5)
