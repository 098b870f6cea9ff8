"""Model selection for transfer learning: strategy comparison, few-shot episodes.

:func:`compare_strategies` cross-validates transfer strategies (pixels, CNN codes +
linear / SVM heads, few-shot heads, fine-tuning) on the user's own data.

``EpisodicSplit`` and ``ClassDisjointSplit`` are cross-validation splitters
that plug into :func:`~sklearn.model_selection.cross_validate`;
:func:`summarize_scores` reports per-episode scores as mean and 95% confidence
interval, the way few-shot results are published.
"""

from ._compare import StrategyReport, compare_strategies
from ._splitters import (
    ClassDisjointSplit,
    EpisodicSplit,
    ScoreSummary,
    class_disjoint_split,
    summarize_scores,
)

__all__ = [
    "ClassDisjointSplit",
    "EpisodicSplit",
    "ScoreSummary",
    "StrategyReport",
    "class_disjoint_split",
    "compare_strategies",
    "summarize_scores",
]
