"""Model selection for transfer learning: strategy comparison, few-shot episodes.

:func:`compare_strategies` cross-validates transfer strategies (pixels, CNN codes +
linear / SVM heads, few-shot heads, fine-tuning) on the user's own data. The
strategies form a registry, ``STRATEGIES`` (name -> :class:`Strategy`); a
selection such as ``"auto"``, ``"all"`` or ``"codes_logreg,pixels_logreg"`` is
checked by :func:`parse_strategies` and turned into names for the data at hand by
:func:`resolve_strategies` (the command line uses the same functions).
:class:`PixelFeatures` is the pixel baseline's transformer.

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
from ._strategies import (
    STRATEGIES,
    PixelFeatures,
    Strategy,
    StrategyContext,
    auto_strategies,
    available_strategies,
    earlier_layer,
    finetune_input_size,
    parse_strategies,
    resolve_strategies,
    top_blocks,
)

__all__ = [
    "STRATEGIES",
    "ClassDisjointSplit",
    "EpisodicSplit",
    "PixelFeatures",
    "ScoreSummary",
    "Strategy",
    "StrategyContext",
    "StrategyReport",
    "auto_strategies",
    "available_strategies",
    "class_disjoint_split",
    "compare_strategies",
    "earlier_layer",
    "finetune_input_size",
    "parse_strategies",
    "resolve_strategies",
    "summarize_scores",
    "top_blocks",
]
