"""Few-shot evaluation: episodic and class-disjoint splitters, confidence intervals.

Kept apart from ``model_selection.py`` (which re-exports these names) so the
strategy-comparison tools can grow there independently.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
from scipy import stats
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params
from sklearn.utils.validation import check_array, column_or_1d

__all__ = [
    "ClassDisjointSplit",
    "EpisodicSplit",
    "ScoreSummary",
    "class_disjoint_split",
    "summarize_scores",
]


def _check_positive_int(value, name, minimum=1):
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


class EpisodicSplit(BaseCrossValidator):
    """Few-shot episodes: ``n_way`` classes, ``k_shot`` support examples each.

    Each split is one episode: ``n_way`` classes drawn at random among those
    with at least ``k_shot + n_query`` examples, then ``k_shot`` support and
    ``n_query`` query examples drawn without replacement from each. The support
    indices are the "train" part and the query indices the "test" part, so the
    splitter plugs into :func:`~sklearn.model_selection.cross_validate` and
    :func:`~sklearn.model_selection.cross_val_score`; report the per-episode
    scores with :func:`summarize_scores` (mean and 95% confidence interval).

    Parameters
    ----------
    n_way : int, default=5
        Classes per episode.
    k_shot : int, default=1
        Support (training) examples per class.
    n_query : int, default=15
        Query (test) examples per class.
    n_episodes : int, default=100
        Number of episodes (splits).
    random_state : int, RandomState instance or None, default=None
        Controls the draws. An int gives the same episodes on every call of
        :meth:`split`.

    See Also
    --------
    ClassDisjointSplit : separate pretraining classes from novel classes.
    summarize_scores : mean and confidence interval of episode scores.

    Notes
    -----
    Evaluate on classes the feature extractor never saw in pretraining
    (:func:`class_disjoint_split`), otherwise the few-shot numbers are
    optimistic. Query sets are balanced (``n_query`` per class), as in the
    few-shot literature.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.model_selection import EpisodicSplit
    >>> y = np.repeat(np.arange(10), 20)
    >>> cv = EpisodicSplit(n_way=5, k_shot=1, n_query=3, n_episodes=2,
    ...                    random_state=0)
    >>> for support, query in cv.split(np.zeros((200, 1)), y):
    ...     print(len(support), len(query), len(np.unique(y[support])))
    5 15 5
    5 15 5
    """

    def __init__(
        self, n_way=5, k_shot=1, n_query=15, n_episodes=100, *, random_state=None
    ):
        self.n_way = n_way
        self.k_shot = k_shot
        self.n_query = n_query
        self.n_episodes = n_episodes
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of episodes.

        Parameters
        ----------
        X, y, groups : object
            Ignored, present for API compatibility.

        Returns
        -------
        n_splits : int
        """
        return self.n_episodes

    def split(self, X, y, groups=None):
        """Generate ``(support_indices, query_indices)`` for each episode.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples; only their number is used.
        y : array-like of shape (n_samples,)
            Class labels.
        groups : object
            Ignored.

        Yields
        ------
        support : ndarray
            ``n_way * k_shot`` indices, grouped by class.
        query : ndarray
            ``n_way * n_query`` indices, disjoint from ``support``.
        """
        _check_positive_int(self.n_way, "n_way", 2)
        _check_positive_int(self.k_shot, "k_shot")
        _check_positive_int(self.n_query, "n_query")
        _check_positive_int(self.n_episodes, "n_episodes")
        y = column_or_1d(np.asarray(y), warn=True)
        if X is not None and len(X) != len(y):
            raise ValueError(f"X has {len(X)} samples but y has {len(y)}.")
        classes, y_idx = np.unique(y, return_inverse=True)
        per_class = [np.flatnonzero(y_idx == c) for c in range(len(classes))]
        need = self.k_shot + self.n_query
        eligible = [c for c, idx in enumerate(per_class) if len(idx) >= need]
        if len(eligible) < self.n_way:
            raise ValueError(
                f"n_way={self.n_way} classes with at least k_shot + n_query = "
                f"{need} examples are needed; only {len(eligible)} of "
                f"{len(classes)} classes have that many."
            )
        rng = check_random_state(self.random_state)
        for _ in range(self.n_episodes):
            chosen = rng.choice(eligible, size=self.n_way, replace=False)
            support, query = [], []
            for c in chosen:
                picked = rng.choice(per_class[c], size=need, replace=False)
                support.append(picked[: self.k_shot])
                query.append(picked[self.k_shot :])
            yield np.concatenate(support), np.concatenate(query)

    def _iter_test_indices(self, X=None, y=None, groups=None):  # pragma: no cover
        raise NotImplementedError("EpisodicSplit.split yields the indices directly.")


class ClassDisjointSplit(BaseCrossValidator):
    """Splits whose train and test parts share no class.

    Each split draws ``n_novel_classes`` classes as "novel" (test) and keeps the
    others as "base" (train), so a feature extractor pretrained on the train
    part can be evaluated few-shot on classes it never saw. Like
    :class:`~sklearn.model_selection.GroupShuffleSplit` with the labels as
    groups.

    Parameters
    ----------
    n_splits : int, default=5
        Number of random class partitions.
    n_novel_classes : int or float, default=0.5
        Novel classes per split: a count, or a fraction of the classes.
    random_state : int, RandomState instance or None, default=None
        Controls the draws.

    See Also
    --------
    class_disjoint_split : one split, with the novel classes chosen by name.
    EpisodicSplit : few-shot episodes within the novel classes.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.model_selection import ClassDisjointSplit
    >>> y = np.repeat(np.arange(6), 4)
    >>> cv = ClassDisjointSplit(n_splits=2, n_novel_classes=2, random_state=0)
    >>> for base, novel in cv.split(None, y):
    ...     print(np.unique(y[base]).size, np.unique(y[novel]).size,
    ...           np.intersect1d(y[base], y[novel]).size)
    4 2 0
    4 2 0
    """

    def __init__(self, n_splits=5, *, n_novel_classes=0.5, random_state=None):
        self.n_splits = n_splits
        self.n_novel_classes = n_novel_classes
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits.

        Parameters
        ----------
        X, y, groups : object
            Ignored, present for API compatibility.

        Returns
        -------
        n_splits : int
        """
        return self.n_splits

    def split(self, X, y, groups=None):
        """Generate ``(base_indices, novel_indices)`` with disjoint classes.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or None
            Ignored apart from its length.
        y : array-like of shape (n_samples,)
            Class labels.
        groups : object
            Ignored.

        Yields
        ------
        base : ndarray
            Indices of the rows of the base (pretraining) classes.
        novel : ndarray
            Indices of the rows of the novel classes.
        """
        _check_positive_int(self.n_splits, "n_splits")
        y = column_or_1d(np.asarray(y), warn=True)
        classes = np.unique(y)
        n_novel = _n_novel(self.n_novel_classes, len(classes))
        rng = check_random_state(self.random_state)
        for _ in range(self.n_splits):
            novel = rng.choice(classes, size=n_novel, replace=False)
            is_novel = np.isin(y, novel)
            yield np.flatnonzero(~is_novel), np.flatnonzero(is_novel)

    def _iter_test_indices(self, X=None, y=None, groups=None):  # pragma: no cover
        raise NotImplementedError


def _n_novel(n_novel, n_classes):
    if isinstance(n_novel, Real) and not isinstance(n_novel, Integral):
        if not 0 < n_novel < 1:
            raise ValueError(f"n_novel_classes={n_novel} must be in (0, 1).")
        n_novel = int(round(n_novel * n_classes))
    n_novel = int(n_novel)
    if not 1 <= n_novel < n_classes:
        raise ValueError(
            f"n_novel_classes must leave at least one base and one novel class; "
            f"got {n_novel} novel out of {n_classes} classes."
        )
    return n_novel


@validate_params(
    {
        "y": ["array-like"],
        "novel_classes": ["array-like", None],
        "n_novel_classes": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def class_disjoint_split(
    y, *, novel_classes=None, n_novel_classes=None, random_state=None
):
    """Separate "pretraining" (base) classes from "novel" (few-shot) classes.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    novel_classes : array-like, default=None
        The novel classes by label, e.g. ``[5, 6, 7, 8, 9]``.
    n_novel_classes : int or float, default=None
        Otherwise draw this many (or this fraction of) classes at random; 0.5
        when both are None.
    random_state : int, RandomState instance or None, default=None
        Controls the random draw.

    Returns
    -------
    base_idx : ndarray
        Indices of the rows of the base classes.
    novel_idx : ndarray
        Indices of the rows of the novel classes.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.model_selection import class_disjoint_split
    >>> y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    >>> base, novel = class_disjoint_split(y, novel_classes=[2, 3])
    >>> base, novel
    (array([0, 1, 4, 5]), array([2, 3, 6, 7]))
    """
    y = column_or_1d(np.asarray(y), warn=True)
    classes = np.unique(y)
    if novel_classes is not None:
        if n_novel_classes is not None:
            raise ValueError("Give novel_classes or n_novel_classes, not both.")
        novel = np.asarray(novel_classes)
        missing = np.setdiff1d(novel, classes)
        if missing.size:
            raise ValueError(f"novel_classes {missing.tolist()} are not in y.")
        if np.unique(novel).size >= classes.size:
            raise ValueError("novel_classes must leave at least one base class.")
    else:
        n = _n_novel(0.5 if n_novel_classes is None else n_novel_classes, len(classes))
        novel = check_random_state(random_state).choice(classes, size=n, replace=False)
    is_novel = np.isin(y, novel)
    return np.flatnonzero(~is_novel), np.flatnonzero(is_novel)


class ScoreSummary(NamedTuple):
    """Mean of per-episode scores with a confidence interval.

    ``str()`` gives ``"0.734 +/- 0.012"`` (the half-width of the interval).
    :func:`summarize_scores` returns it; a named tuple of the fields below.

    Parameters
    ----------
    mean : float
        Mean of the scores.
    ci : float
        Half-width of the confidence interval.
    low, high : float
        The interval's ends, ``mean - ci`` and ``mean + ci``.
    std : float
        Sample standard deviation of the scores.
    n : int
        Number of scores.
    confidence : float
        Confidence level of the interval (0.95 by default).
    """

    mean: float
    ci: float
    low: float
    high: float
    std: float
    n: int
    confidence: float

    def __str__(self):
        return f"{self.mean:.3f} +/- {self.ci:.3f}"


def summarize_scores(scores, *, confidence=0.95):
    """Mean and confidence interval of per-episode (or per-fold) scores.

    The interval is ``mean +/- t * std / sqrt(n)`` with Student's t quantile
    (close to 1.96 for the hundreds of episodes few-shot papers use), the way
    few-shot results are reported.

    Parameters
    ----------
    scores : array-like of shape (n_episodes,)
        One score per episode, e.g. ``cross_val_score(clf, X, y,
        cv=EpisodicSplit(...))``.
    confidence : float, default=0.95
        Coverage of the interval.

    Returns
    -------
    summary : ScoreSummary
        ``mean``, ``ci`` (half-width), ``low``, ``high``, ``std``, ``n`` and
        ``confidence``; ``str(summary)`` reads ``"mean +/- ci"``.

    Examples
    --------
    >>> from sktransfer.model_selection import summarize_scores
    >>> s = summarize_scores([0.6, 0.7, 0.8, 0.7])
    >>> print(s)
    0.700 +/- 0.130
    >>> round(s.low, 3), round(s.high, 3)
    (0.57, 0.83)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    scores = check_array(np.asarray(scores, dtype=float), ensure_2d=False).ravel()
    n = scores.size
    mean = float(scores.mean())
    std = float(scores.std(ddof=1)) if n > 1 else 0.0
    half = (
        float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n))
        if n > 1
        else float("nan")
    )
    return ScoreSummary(mean, half, mean - half, mean + half, std, n, confidence)
