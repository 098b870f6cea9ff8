"""The strategy registry of compare_strategies, name parsing, and the pixel baseline.

Each strategy is a name, a description, a kind (``"pixels"``, ``"codes"``,
``"finetune"``), the tasks it serves (``"classification"``, ``"regression"``,
``"multilabel"``) and a factory taking a :class:`StrategyContext` and returning a
scikit-learn estimator. This module owns the registry, the tasks and their
metrics, and the parsing of strategy selections (``"auto"``, ``"all"``, names);
it is public through
:mod:`sktransfer.model_selection`, which the command line uses too. The driver
(``_compare.py``) and the report (``_report.py``) live apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.utils.validation import check_is_fitted

from ._backbones import (
    Preprocessing,
    anatomy,
    load_backbone,
    model_display_name,
)
from ._fewshot import CosineSoftmaxClassifier, PrototypeClassifier
from ._finetune import FineTunedClassifier
from ._images import Preprocessor, check_images
from ._regressor import FineTunedRegressor

__all__ = [
    "STRATEGIES",
    "TASKS",
    "TASK_SCORING",
    "PixelFeatures",
    "Strategy",
    "StrategyContext",
    "auto_strategies",
    "available_strategies",
    "earlier_layer",
    "finetune_input_size",
    "parse_strategies",
    "resolve_strategies",
    "top_blocks",
]

PENULTIMATE = "penultimate"
EARLIER = "earlier"

CLASSIFICATION, REGRESSION, MULTILABEL = "classification", "regression", "multilabel"
TASKS = (CLASSIFICATION, REGRESSION, MULTILABEL)
# What each task ranks by, unless the caller passes a scorer: single labels by
# accuracy (as always), values by R², multi-label indicators by micro-F1 (every
# (image, label) decision counts once, so rare labels do not dominate the score).
TASK_SCORING = {CLASSIFICATION: "accuracy", REGRESSION: "r2", MULTILABEL: "f1_micro"}


# --------------------------------------------------------------- pixel baseline
class PixelFeatures(TransformerMixin, BaseEstimator):
    """Images to resized, flattened grayscale pixels in [0, 1] (a baseline).

    Parameters
    ----------
    size : int, default=28
        Images are converted to grayscale and resized to ``size x size``.

    Attributes
    ----------
    n_features_out_ : int
        ``size * size``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.model_selection import PixelFeatures
    >>> PixelFeatures(size=8).fit_transform(np.zeros((2, 16, 16), np.uint8)).shape
    (2, 64)
    """

    _parameter_constraints = {"size": [Integral]}

    def __init__(self, *, size=28):
        self.size = size

    def fit(self, X, y=None):
        """Validate ``X``; nothing is learned.

        Parameters
        ----------
        X : images
            Arrays, PIL images or file paths, as for
            :class:`~sktransfer.CNNFeatureExtractor`.
        y : ignored

        Returns
        -------
        self : PixelFeatures
        """
        check_images(X)
        if int(self.size) < 1:
            raise ValueError(f"size must be >= 1, got {self.size!r}.")
        self.n_features_out_ = int(self.size) ** 2
        return self

    def transform(self, X):
        """Return ``(n_samples, size * size)`` float32 pixels.

        Parameters
        ----------
        X : images
            As for :meth:`fit`.

        Returns
        -------
        pixels : ndarray of shape (n_samples, size * size)
        """
        check_is_fitted(self, "n_features_out_")
        images = check_images(X)
        pre = Preprocessor(
            Preprocessing(
                input_size=(self.size, self.size), mean=(0.0,), std=(1.0,), in_chans=1
            )
        )
        out = np.empty((len(images), self.n_features_out_), dtype=np.float32)
        for start in range(0, len(images), 256):
            idx = range(start, min(start + 256, len(images)))
            out[start : idx.stop] = pre.load_batch(images, idx).flatten(1).numpy()
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


# --------------------------------------------------------------------- registry
@dataclass(frozen=True)
class StrategyContext:
    """What a strategy's factory may know about the run: the backbone and the data.

    One per :func:`~sktransfer.compare_strategies` call, shared
    by every strategy; frozen, so no factory can change what the next one sees.
    Every field is readable as an attribute of the same name.

    Parameters
    ----------
    model, weights : backbone spec
        As in :class:`~sktransfer.CNNFeatureExtractor`.
    input_size : int or None
        Image size for the backbone (``None``: the weights' own).
    random_state : int or None
        Seed of the estimators (and of the folds).
    n_samples, n_classes : int
        Size of the data: images, and classes (single-label) or labels
        (multi-label); 0 for regression.
    device, precision : str
        Where and in which precision networks run (as in the estimators).
    task : {"classification", "regression", "multilabel"}
        What the targets are.
    n_outputs : int
        Target columns: 1 for single labels and one-dimensional values, the
        number of values (multi-output regression) or of labels (multi-label).

    Examples
    --------
    >>> from sktransfer.model_selection import STRATEGIES, StrategyContext
    >>> ctx = StrategyContext("timm/test_efficientnet", None, n_samples=20,
    ...                       n_classes=2, input_size=32, random_state=0)
    >>> STRATEGIES["finetune_head"].factory(ctx).train_layers
    'head'
    """

    model: object = "efficientnet_lite0"
    weights: object = "imagenet"
    input_size: object = None
    random_state: object = None
    n_samples: int = 0
    n_classes: int = 0
    device: str = "auto"
    precision: str = "auto"
    task: str = CLASSIFICATION
    n_outputs: int = 1


@dataclass(frozen=True)
class Strategy:
    """One named way of learning from images.

    An entry of the registry ``STRATEGIES``; every field is readable as an
    attribute of the same name.

    Parameters
    ----------
    name : str
        Short identifier used in reports and on the command line.
    description : str
        One line saying what the strategy does.
    kind : {"pixels", "codes", "finetune"}
        How it consumes images: a head on resized grayscale pixels, a head on
        CNN codes of one ``(layer, pooling)`` (extracted once and shared), or an
        estimator taking the images themselves.
    factory : callable
        ``factory(ctx) -> estimator`` with ``ctx`` a
        :class:`~sktransfer.model_selection.StrategyContext`.
        For ``"codes"`` the estimator is the head that sits on the codes.
    layer : str or None
        ``"penultimate"``, ``"earlier"`` (resolved by
        :func:`~sktransfer.model_selection.earlier_layer`) or a
        module name; ``"codes"`` only.
    pooling : str or None
        Pooling of a named layer's maps; ``"codes"`` only.
    tasks : tuple of str
        The tasks (``"classification"``, ``"regression"``, ``"multilabel"``)
        whose targets the estimator takes: a strategy only runs, and is only
        accepted by name, for those.
    """

    name: str
    description: str
    kind: str
    factory: object
    layer: str | None = None
    pooling: str | None = None
    tasks: tuple = (CLASSIFICATION,)


def _logreg(ctx):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))


def _svc(ctx):
    # standardize, then unit length: an RBF kernel on cosine geometry, which suits
    # both penultimate and earlier-layer codes (measured on Fashion-MNIST codes)
    return make_pipeline(StandardScaler(), Normalizer(), SVC(kernel="rbf", C=10.0))


def _ovr_logreg(ctx):
    # one logistic regression per label, on one shared standardization; the
    # single-label head's C
    return make_pipeline(
        StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=2000, C=0.5))
    )


_RIDGE_ALPHAS = np.logspace(-2, 5, 15)


def _ridge(ctx):
    # RidgeCV picks the L2 by efficient leave-one-out on the training fold; it
    # takes one or several outputs as they are
    return make_pipeline(StandardScaler(), RidgeCV(alphas=_RIDGE_ALPHAS))


def _svr(ctx):
    # the SVC's cosine geometry; targets standardized, so SVR's epsilon-tube
    # (0.1) means a tenth of a standard deviation whatever the targets' unit.
    # SVR fits one output: several are fitted one by one.
    svr = TransformedTargetRegressor(
        regressor=make_pipeline(
            StandardScaler(), Normalizer(), SVR(kernel="rbf", C=10.0)
        ),
        transformer=StandardScaler(),
    )
    return MultiOutputRegressor(svr) if ctx.n_outputs > 1 else svr


def _knn(ctx):
    # a training fold holds at least half of the images (cv >= 2)
    k = max(1, min(5, ctx.n_samples // 2))
    return make_pipeline(
        StandardScaler(),
        Normalizer(),
        KNeighborsRegressor(n_neighbors=k, weights="distance"),
    )


# Fine-tuning at the weights' own 224 px costs minutes per epoch on a CPU; without
# an explicit input_size, CPU fine-tuning runs at this size (CNNs pool adaptively).
CPU_FINETUNE_SIZE = 96


def finetune_input_size(input_size):
    """The input size fine-tuning strategies use: ``input_size``, else 96 px on CPU.

    With a GPU (``None``) the weights' own size is kept.

    Parameters
    ----------
    input_size : int, (int, int) or None
        The size asked for (``compare_strategies(input_size=...)``).

    Returns
    -------
    input_size : int, (int, int) or None
    """
    if input_size is not None:
        return input_size
    import torch

    return None if torch.cuda.is_available() else CPU_FINETUNE_SIZE


def _finetune(
    train_layers,
    max_epochs,
    freeze_epochs=0,
    pretrained=True,
    estimator=FineTunedClassifier,
    lr=1e-3,
):
    """Factory of a fine-tuning strategy (``estimator``: FineTunedClassifier or
    FineTunedRegressor).

    ``train_layers="top2"`` trains the last two blocks of the body (see
    :func:`top_blocks`) and what follows them; ``freeze_epochs`` trains the head
    alone first (linear probe, then fine-tune: a random head's large gradients
    would otherwise wreck the pretrained features). From scratch (``pretrained=
    False``) every layer learns at the head's rate. ``lr``, ``train_layers``
    or ``max_epochs`` of None keep the estimator's own default.
    """

    def factory(ctx):
        layers = train_layers
        if layers == "top2":
            layers = top_blocks(ctx.model, ctx.weights, 2)
        kwargs = {}
        if not pretrained:
            kwargs["backbone_lr"] = lr
        if lr is not None:
            kwargs["lr"] = lr
        if layers is not None:
            kwargs["train_layers"] = layers
        if max_epochs is not None:
            kwargs["max_epochs"] = max_epochs
        return estimator(
            model=ctx.model,
            weights=ctx.weights if pretrained else None,
            freeze_epochs=freeze_epochs,
            input_size=finetune_input_size(ctx.input_size),
            device=ctx.device,
            precision=ctx.precision,
            random_state=ctx.random_state,
            verbose=0,  # compare prints its own progress
            **kwargs,
        )

    return factory


def _finetune_defaults(ctx):
    """``FineTunedClassifier()`` with its own defaults, whatever they are.

    Only the run's context reaches it: the backbone, where it runs, the seed,
    and the input size only when the caller chose one (else the weights' own,
    224 px for EfficientNet-Lite0, not the 96 px of the other fine-tuning
    strategies on a CPU). No default value is copied here.
    """
    size = {} if ctx.input_size is None else {"input_size": ctx.input_size}
    return FineTunedClassifier(
        model=ctx.model,
        weights=ctx.weights,
        device=ctx.device,
        precision=ctx.precision,
        random_state=ctx.random_state,
        verbose=0,  # compare prints its own progress
        **size,
    )


# FineTunedClassifier takes one label per image or a multi-label indicator
_LABELS = (CLASSIFICATION, MULTILABEL)
# "auto" tries the defaults up to this many images per class (or label); above,
# by name only: at 224 px a fine-tune costs minutes per fold on a CPU there
DEFAULTS_MAX_PER_CLASS = 500

STRATEGIES = {
    s.name: s
    for s in [
        Strategy(
            "pixels_logreg",
            "LogisticRegression on resized grayscale pixels (baseline)",
            "pixels",
            lambda ctx: LogisticRegression(max_iter=2000, C=0.1),
        ),
        Strategy(
            "codes_logreg",
            "penultimate CNN codes + LogisticRegression",
            "codes",
            _logreg,
            layer=PENULTIMATE,
        ),
        Strategy(
            "codes_svc",
            "penultimate CNN codes + RBF SVC",
            "codes",
            _svc,
            layer=PENULTIMATE,
        ),
        Strategy(
            "earlier_svc",
            "codes of an earlier layer (avg+max pooled) + RBF SVC",
            "codes",
            _svc,
            layer=EARLIER,
            pooling="avgmax",
        ),
        Strategy(
            "prototype",
            "penultimate CNN codes + PrototypeClassifier (cosine to class means)",
            "codes",
            lambda ctx: PrototypeClassifier(metric="cosine", scale=10.0),
            layer=PENULTIMATE,
        ),
        Strategy(
            "cosine_softmax",
            "penultimate CNN codes + CosineSoftmaxClassifier (W = class means, tuned)",
            "codes",
            # deterministic (full-batch steps from the class means): no random_state
            lambda ctx: CosineSoftmaxClassifier(scale=10.0, max_iter=100),
            layer=PENULTIMATE,
        ),
        Strategy(
            "finetune_defaults",
            "FineTunedClassifier() with its defaults, at its own input size",
            "finetune",
            _finetune_defaults,
            tasks=_LABELS,
        ),
        Strategy(
            "finetune_head",
            "FineTunedClassifier, body frozen, new head trained (linear probe)",
            "finetune",
            _finetune("head", 10),
            tasks=_LABELS,
        ),
        Strategy(
            "finetune_top2",
            "FineTunedClassifier, head first, then the last 2 blocks + head",
            "finetune",
            _finetune("top2", 8, freeze_epochs=2),
            tasks=_LABELS,
        ),
        Strategy(
            "finetune_all",
            "FineTunedClassifier, head first, then all layers",
            "finetune",
            _finetune("all", 8, freeze_epochs=2),
            tasks=_LABELS,
        ),
        Strategy(
            "scratch",
            "same network trained from random initialization (weights=None)",
            "finetune",
            _finetune("all", 15, pretrained=False),
            tasks=_LABELS,
        ),
        # ---- real-valued targets, one or several (ranked by R²)
        Strategy(
            "pixels_ridge",
            "RidgeCV on resized grayscale pixels (baseline)",
            "pixels",
            lambda ctx: RidgeCV(alphas=_RIDGE_ALPHAS),
            tasks=(REGRESSION,),
        ),
        Strategy(
            "codes_ridge",
            "penultimate CNN codes + RidgeCV",
            "codes",
            _ridge,
            layer=PENULTIMATE,
            tasks=(REGRESSION,),
        ),
        Strategy(
            "codes_svr",
            "penultimate CNN codes + RBF SVR (one per target)",
            "codes",
            _svr,
            layer=PENULTIMATE,
            tasks=(REGRESSION,),
        ),
        Strategy(
            "codes_knn",
            "penultimate CNN codes + k-nearest-neighbour regression (cosine)",
            "codes",
            _knn,
            layer=PENULTIMATE,
            tasks=(REGRESSION,),
        ),
        Strategy(
            "earlier_ridge",
            "codes of an earlier layer (avg+max pooled) + RidgeCV",
            "codes",
            _ridge,
            layer=EARLIER,
            pooling="avgmax",
            tasks=(REGRESSION,),
        ),
        Strategy(
            "finetune_regressor",
            "FineTunedRegressor with its defaults (ridge head start, then fine-tune)",
            "finetune",
            # the regressor's own train_layers / lr / epochs: its defaults are
            # the ones chosen on regression tasks
            _finetune(None, None, estimator=FineTunedRegressor, lr=None),
            tasks=(REGRESSION,),
        ),
        # ---- multi-label 0/1 indicators (ranked by micro-F1); FineTunedClassifier
        # takes them too (the finetune_* strategies above)
        Strategy(
            "pixels_ovr",
            "one-vs-rest LogisticRegression on resized grayscale pixels (baseline)",
            "pixels",
            lambda ctx: OneVsRestClassifier(LogisticRegression(max_iter=2000, C=0.1)),
            tasks=(MULTILABEL,),
        ),
        Strategy(
            "codes_ovr",
            "penultimate CNN codes + one-vs-rest LogisticRegression",
            "codes",
            _ovr_logreg,
            layer=PENULTIMATE,
            tasks=(MULTILABEL,),
        ),
        Strategy(
            "earlier_ovr",
            "codes of an earlier layer (avg+max pooled) + one-vs-rest "
            "LogisticRegression",
            "codes",
            _ovr_logreg,
            layer=EARLIER,
            pooling="avgmax",
            tasks=(MULTILABEL,),
        ),
    ]
}


def available_strategies(task=None):
    """The registered strategies, ``{name: Strategy}``, in registry order.

    Parameters
    ----------
    task : {"classification", "regression", "multilabel"}, default=None
        Only the strategies serving this task; ``None``: all of them.

    Examples
    --------
    >>> from sktransfer.model_selection import available_strategies
    >>> available_strategies()["codes_svc"].description
    'penultimate CNN codes + RBF SVC'
    >>> list(available_strategies("regression"))[:2]
    ['pixels_ridge', 'codes_ridge']
    """
    if task is None:
        return dict(STRATEGIES)
    _check_task(task)
    return {name: s for name, s in STRATEGIES.items() if task in s.tasks}


def auto_strategies(n_samples, n_classes, task=CLASSIFICATION):
    """The documents' rule of thumb, as an ordered list of strategy names.

    Single labels: small data (fewer than 200 images per class): CNN codes +
    linear classifier first, then an earlier layer + SVM, the few-shot heads,
    ``FineTunedClassifier()`` with its defaults (``finetune_defaults``, up to
    500 images per class; above that by name only, for its cost), and the pixel
    baseline. Larger data adds fine-tuning of the head and the last stages;
    from 1,000 images per class, fine-tuning everything.

    Multi-label indicators follow the same sizes, counted per label: codes and
    earlier-layer codes + one-vs-rest logistic regression, the defaults up to
    500 images per label, fine-tuning from 200 images per label, the pixel
    baseline last.

    Real values: codes (penultimate and earlier) + RidgeCV, + SVR, + kNN, then
    ``FineTunedRegressor`` at every size -- frozen codes are weakest on
    values (a rotation angle on Fashion-MNIST: R² 0.22 for codes + RidgeCV,
    0.77 fine-tuned, with 300 images), so fine-tuning is always tried; a
    ``time_budget`` skips it -- and the pixel baseline.

    Parameters
    ----------
    n_samples : int
        Number of training images.
    n_classes : int
        Classes (single-label) or labels (multi-label); unused for regression.
    task : {"classification", "regression", "multilabel"}, default="classification"
        What the targets are.

    Returns
    -------
    names : list of str
        Registry names, in the order they are tried.

    Examples
    --------
    >>> from sktransfer.model_selection import auto_strategies
    >>> auto_strategies(300, 0, task="regression")[-2:]
    ['finetune_regressor', 'pixels_ridge']
    """
    _check_task(task)
    if task == REGRESSION:
        names = ["codes_ridge", "earlier_ridge", "codes_svr", "codes_knn"]
        return names + ["finetune_regressor", "pixels_ridge"]
    per_class = n_samples / max(n_classes, 1)
    if task == MULTILABEL:
        names = ["codes_ovr", "earlier_ovr"]
    else:
        names = [
            "codes_logreg",
            "earlier_svc",
            "codes_svc",
            "prototype",
            "cosine_softmax",
        ]
    if per_class <= DEFAULTS_MAX_PER_CLASS:
        names += ["finetune_defaults"]
    if per_class >= 200:
        names += ["finetune_head", "finetune_top2"]
    if per_class >= 1000:
        names += ["finetune_all"]
    return names + ["pixels_ovr" if task == MULTILABEL else "pixels_logreg"]


def _check_task(task):
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}.")


def earlier_layer(model, weights=None):
    """A sensible "earlier layer" of a backbone for the earlier-layer + SVM recipe.

    Among the body's stages (``blocks.N`` of EfficientNets, ``layer1..4`` of
    ResNets, see ``Anatomy.blocks``) the one at 60 % of the depth: ``blocks.4`` of
    EfficientNet-Lite0's seven blocks, ``layer3`` of a ResNet. Earlier layers are
    less specific to ImageNet's classes, which helps on dissimilar data.

    Parameters
    ----------
    model : str or torch.nn.Module
        The backbone, as in :class:`~sktransfer.CNNFeatureExtractor`.
    weights : str, path or None, default=None
        Its weights, as in :func:`~sktransfer.load_backbone` (the stages do not
        depend on them).

    Returns
    -------
    layer : str
        A module name for ``CNNFeatureExtractor(layer=...)``.

    Examples
    --------
    >>> from sktransfer.model_selection import earlier_layer
    >>> earlier_layer("efficientnet_lite0"), earlier_layer("resnet18")
    ('blocks.4', 'layer3')
    """
    names = _body_blocks(model, weights)
    return names[round(0.6 * (len(names) - 1))]


def top_blocks(model, weights=None, k=2):
    """The module from which the last ``k`` blocks of the body on are trained.

    Passed as ``FineTunedClassifier(train_layers=...)`` (a module name unfreezes
    that module and everything after it). Blocks are the composite stages
    (``blocks.5`` of EfficientNet-Lite0, ``layer3`` of a ResNet for ``k=2``);
    an int ``train_layers=2`` would count single layers such as ``conv_head``
    and ``bn2`` instead.

    Parameters
    ----------
    model, weights
        The backbone and its weights, as in :func:`earlier_layer`.
    k : int, default=2
        How many of the last blocks train.

    Returns
    -------
    layer : str
        A module name for ``FineTunedClassifier(train_layers=...)``.

    Examples
    --------
    >>> from sktransfer.model_selection import top_blocks
    >>> top_blocks("efficientnet_lite0"), top_blocks("resnet18")
    ('blocks.5', 'layer3')
    """
    names = _body_blocks(model, weights)
    return names[max(len(names) - int(k), 0)]


def _body_blocks(model, weights):
    """Names of the body's composite stages (:attr:`Anatomy.blocks
    <sktransfer._backbones.Anatomy>`: all stages when none are composite)."""
    net, _ = load_backbone(model, weights)
    names = list(anatomy(net).blocks)
    if not names:
        raise ValueError(f"cannot find the stages of {model_display_name(model)}.")
    return names


def parse_strategies(strategies, task=None):
    """Check a strategy selection without the data: ``"auto"``, ``"all"`` or names.

    Parameters
    ----------
    strategies : str or list of str
        ``"auto"``, ``"all"``, a comma-separated string of names or a list of
        names from ``STRATEGIES``.
    task : {"classification", "regression", "multilabel"}, default=None
        When given, every name must serve this task (``Strategy.tasks``).

    Returns
    -------
    selection : "auto", "all" or list of str
        The names in the given order.

    Raises
    ------
    ValueError
        For an empty selection, an unknown name (the message lists the known
        ones), a name given twice, or a name that does not serve ``task`` (the
        message names it, the task and the strategies that do).

    Examples
    --------
    >>> from sktransfer.model_selection import parse_strategies
    >>> parse_strategies("codes_logreg, pixels_logreg")
    ['codes_logreg', 'pixels_logreg']
    >>> parse_strategies("auto")
    'auto'
    """
    if task is not None:
        _check_task(task)
    if isinstance(strategies, str):
        if strategies.strip() in ("auto", "all"):
            return strategies.strip()
        strategies = [s.strip() for s in strategies.split(",") if s.strip()]
    try:
        names = list(strategies)
    except TypeError:
        raise TypeError(
            f"strategies must be 'auto', 'all', a comma-separated string or a list "
            f"of names, got {type(strategies).__name__}."
        ) from None
    if not names:
        raise ValueError("strategies is empty; name at least one or use 'auto'.")
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ValueError(
            f"unknown strategy name(s) {unknown}; known: {sorted(STRATEGIES)} "
            f"(or 'auto', 'all')."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"strategies lists a name twice: {names}.")
    if task is not None:
        wrong = [n for n in names if task not in STRATEGIES[n].tasks]
        if wrong:
            serve = ", ".join(sorted({t for n in wrong for t in STRATEGIES[n].tasks}))
            raise ValueError(
                f"strategy name(s) {wrong} do not serve the {task} task (they "
                f"serve {serve}); {task} strategies: "
                f"{list(available_strategies(task))} (or 'auto', 'all')."
            )
    return names


def resolve_strategies(strategies, n_samples, n_classes, task=CLASSIFICATION):
    """The strategy names a selection means for data of this size and task.

    ``"auto"`` follows :func:`~sktransfer.model_selection.auto_strategies`,
    ``"all"`` is every registered strategy serving ``task``; names are checked
    by :func:`~sktransfer.model_selection.parse_strategies`.

    Parameters
    ----------
    strategies : str or list of str
        As in :func:`~sktransfer.model_selection.parse_strategies`.
    n_samples, n_classes : int
        Size of the data (for ``"auto"``): images, and classes or labels.
    task : {"classification", "regression", "multilabel"}, default="classification"
        What the targets are.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from sktransfer.model_selection import resolve_strategies
    >>> resolve_strategies("auto", n_samples=200, n_classes=10)[:2]
    ['codes_logreg', 'earlier_svc']
    >>> resolve_strategies("all", 40, 3, task="multilabel")[:3]
    ['finetune_defaults', 'finetune_head', 'finetune_top2']
    """
    selection = parse_strategies(strategies, task)
    if selection == "auto":
        return auto_strategies(n_samples, n_classes, task)
    if selection == "all":
        return list(available_strategies(task))
    return selection
