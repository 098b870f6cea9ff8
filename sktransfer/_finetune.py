"""FineTunedClassifier: fine-tune a pretrained network as one sklearn classifier."""

from __future__ import annotations

import contextlib
import os
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_is_fitted,
    column_or_1d,
)
from skorch.callbacks import LRScheduler
from skorch.helper import predefined_split
from torch import nn

from ._activations import (
    ActivationSet,
    CachedDataset,
    cache_units,
    checkpoint_index,
    lookup,
    plan_cut,
    units_fingerprint,
)
from ._augment import make_augmentation
from ._backbones import (
    find_head,
    last_downsampling_block,
    last_resolution_blocks,
    load_backbone,
    strip_head,
)
from ._base import _ImageEstimatorMixin
from ._cache import CodeCache, image_digests, resolve_cache_dir, state_digest
from ._doclink import DocLinkMixin
from ._engine import TorchEngine, build_engine, forward_halving
from ._fit_callbacks import BestWeights, DrawViews, NaNGuard, PhaseSwitch, lr_schedule
from ._heads import build_head, class_means, fit_linear_probe
from ._images import Preprocessor, iter_batches, resolve_num_workers
from ._labels import check_no_missing_labels, check_sample_weight
from ._runtime import (
    dtype_name,
    keep_freed_memory,
    resolve_policy,
)
from ._training import (
    FineTuneModule,
    FineTuneNet,
    ImageDataset,
    OwnedRNG,
    SeededTransform,
    TrainConfig,
    WeightedCrossEntropy,
    adabn,
    bf16_unsafe_convs,
    export_state,
    fp32_convs,
    frozen_features,
    is_stochastic,
    make_loader,
    recalibrate_bn,
    resolve_trainable,
    set_drop_path,
    softmax,
)

__all__ = ["FineTunedClassifier"]


class _FitData(NamedTuple):
    """What ``_prepare_data`` hands to the head init and the training loop."""

    train: torch.utils.data.Dataset  # (augmented) training items
    valid: torch.utils.data.Dataset | None  # early stopping's held-out items
    plain: torch.utils.data.DataLoader  # training items, un-augmented, in order
    train_idx: np.ndarray  # rows of the fit's data that train
    draw: DrawViews | None  # picks cached views per epoch
    num_workers: int  # DataLoader workers of the training loader
    acts: ActivationSet | None  # the activation cache, when it is on


# The default policy (train_layers / augment / augment_views = "auto"); see the
# class docstring and docs/user_guide/fine_tuning.rst. train_layers="auto" is
# the blocks after the last downsampling (_backbones.last_resolution_blocks);
# this many last stages when the network never downsamples.
_AUTO_TRAIN_LAYERS = 3
_AUTO_AUGMENT = ("flip", "translate")
_AUTO_VIEWS = 4


def _precision_policy(config, runtime):
    """How a fit's arithmetic ran, for ``policy_["precision"]``."""
    if config.step_autocast is not None:
        return (
            f"{dtype_name(config.step_autocast)} training steps (depthwise and "
            f"sub-stride convolutions fp32); {dtype_name(config.autocast)} cache "
            f"and predictions (CPU kind {runtime.cpu_kind})"
        )
    return dtype_name(config.autocast)


def _named_callback(cb, i):
    """``(name, callback)`` for the ``i``-th entry of ``callbacks``, checked."""
    from skorch.callbacks import Callback

    def is_callback(c):
        return isinstance(c, Callback) or (
            isinstance(c, type) and issubclass(c, Callback)
        )

    if isinstance(cb, tuple):
        if len(cb) == 2 and isinstance(cb[0], str) and is_callback(cb[1]):
            return cb
    elif is_callback(cb):
        return (f"user_{i}", cb)
    raise TypeError(
        f"callbacks[{i}] is {cb!r}; each entry must be a skorch callback (an "
        f"instance or subclass of skorch.callbacks.Callback) or a (name, "
        f"callback) tuple."
    )


class FineTunedClassifier(
    DocLinkMixin, _ImageEstimatorMixin, ClassifierMixin, BaseEstimator
):
    """Fine-tune a pretrained CNN on your images: one sklearn classifier.

    ``fit`` loads clean pretrained weights, replaces the network's classifier by a
    new head for your classes, freezes what ``train_layers`` says (BatchNorm
    statistics included) and trains with skorch. Every parameter is flat, so
    ``GridSearchCV`` can search fine-tuning strategies directly; every fit (a
    clone, a CV fold, a refit) starts again from the pretrained weights.

    Parameters
    ----------
    model : str or torch.nn.Module, default="efficientnet_lite0"
        The backbone, as in :class:`CNNFeatureExtractor`: ``"efficientnet_lite0"``
        (ImageNet weights shipped offline), a torchvision name, ``"timm/<name>"``
        or a module.
    weights : str, path, enum or None, default="imagenet"
        Pretrained weights (see :func:`sktransfer.load_backbone`); ``None`` trains
        from scratch, so pretrained-vs-scratch is one parameter. The random init
        of ``None`` is the same in every fit and process (``load_backbone``'s
        ``seed=0``); ``random_state`` seeds the head, the split, shuffling,
        augmentation and dropout.
    input_size : int or (int, int), default=None
        Training and prediction resolution; ``None`` uses the weights' own size
        (224 for ImageNet weights). Smaller is faster; any size works (the
        networks pool adaptively).
    train_layers : {"auto", "head", "all"}, int or str, default="auto"
        What is trained besides the new head. ``"auto"``: the blocks at the
        network's final resolution after its last downsampling block (see
        "Default policy" below); ``"head"``: nothing (a linear
        probe: the body is frozen); ``"all"``: everything; an int ``k``: the last
        ``k`` stages of the body (``conv_stem, bn1, blocks.0 .. blocks.6,
        conv_head, bn2`` for EfficientNets, ``layer1 .. layer4`` for ResNets);
        a module name (``"blocks.5"``, ``"blocks.5.1"``): that module and
        everything registered after it.
    bn : {"frozen", "eval", "train", "adabn"}, default="frozen"
        BatchNorm handling. ``"frozen"``: BatchNorm layers in frozen parts run in
        inference mode and their statistics never change (frozen means frozen);
        BatchNorms in trained parts train normally. ``"eval"``: every BatchNorm
        runs in inference mode (good for tiny batches); trained ones still learn
        their scale and shift. ``"train"``: every BatchNorm trains, frozen parts
        included (statistics and scale / shift: "BN-only" fine-tuning with
        ``train_layers="head"``). ``"adabn"``: re-estimate all statistics on the
        training images first (AdaBN, for a domain shift), then as ``"frozen"``.
    lr : float, default=3e-3
        Learning rate of the head.
    backbone_lr : float or None, default=None
        Learning rate of the trained body layers; ``None`` means ``lr / 3``
        (fine-tuning wants a smaller rate than training from scratch).
    optimizer : {"adamw", "sgd"}, default="adamw"
        AdamW (decoupled weight decay) or SGD with momentum 0.9.
    scheduler : {"cosine", "onecycle"} or None, default="cosine"
        Per-batch learning-rate schedule, restarted when the body is unfrozen.
    freeze_epochs : int, default=0
        Train only the head for this many epochs first, then what
        ``train_layers`` says (fastai's ``fine_tune``, "LP-FT").
    max_epochs : int, default=8
        Epochs in all (``freeze_epochs`` included).
    batch_size : int, default=16
        Small batches give small training sets more steps per epoch (measured
        better at 20 images per class; see the user guide).
    weight_decay : float, default=1e-2
        L2 penalty (a Gaussian prior) on weight matrices and kernels, never on
        BatchNorm parameters or biases.
    l1 : float, default=0.0
        L1 penalty (a Laplace prior): ``l1 * sum(|w|)`` over the trained weight
        matrices and kernels, added to the mean loss. A weight whose update
        crosses zero is set to exactly zero (truncated gradient), so L1 yields
        exact zeros, as its Laplace prior promises; L2 only shrinks.
    dropout : float, default=0.0
        Dropout probability on the features entering the head.
    drop_path : float, default=0.0
        Stochastic depth ("drop layer"): residual blocks are skipped with a
        probability growing linearly with depth up to ``drop_path``. Supported
        where the architecture has the slot (timm EfficientNet / MobileNet /
        ResNet / ConvNeXt / ViT blocks, torchvision ``StochasticDepth``);
        only blocks with a shortcut can be skipped, blocks in frozen parts never
        drop, and a warning says when no trained block can.
    label_smoothing : float, default=0.0
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop
        when ``monitor`` has not improved for ``patience`` epochs, and restore the
        best epoch's weights (kept in memory: no files, safe with ``n_jobs``).
    validation_fraction : float, default=0.1
    patience : int, default=3
    monitor : {"valid_loss", "valid_acc"}, default="valid_loss"
    augment : "auto", None, str, list of str or callable, default="auto"
        Training-time augmentation. ``"auto"``: ``("flip", "translate")`` (the
        default policy); ``"flip"``, ``"light"`` (flip + translate),
        ``"standard"`` (flip + translate + rotate + crop-scale), a list of names
        among ``"flip"``, ``"translate"``, ``"rotate"``, ``"crop_scale"`` (leave out
        ``"flip"`` for images that are not left-right symmetric), or a callable on
        ``(c, h, w)`` float tensors in ``[0, 1]``.
    augment_views : "auto" or int, default="auto"
        With the activation cache (see Notes), augmentation is precomputed:
        ``augment_views`` augmented views of every image go through the frozen
        part once, and each epoch trains on one of them per image, drawn anew.
        ``"auto"`` is 4. Without the cache, every epoch augments afresh and
        this is unused.
    head : {"cosine", "linear"}, default="cosine"
        A cosine-similarity head with a learnable scale (logits depend on the
        direction of the features only), or a linear layer.
    head_init : {"auto", "lp", "xavier", "normal", "zeros", "class_means"}, \
            default="auto"
        Initial head weights (biases start at 0). ``"lp"`` (LP-FT, Kumar et al.
        2022): the exact linear probe, a multinomial logistic regression (LBFGS)
        on the frozen network's features of the un-augmented training images,
        minimizing the (sample-weighted) mean cross-entropy plus
        ``weight_decay / 2 * ||W||**2`` (bias unpenalized; sklearn's
        ``LogisticRegression(C=1 / (weight_decay * n_train))``; label smoothing
        is not part of it); fine-tuning then starts from that head. Linear
        heads only. ``"normal"`` uses std 0.01; ``"zeros"`` is for linear
        heads only (a cosine head scores directions); ``"class_means"`` sets each
        class's row to the normalized mean of its training images' features
        (the few-shot recipe's ``W = M, b = 0``). ``"auto"``: ``"lp"`` for a
        linear head, ``"class_means"`` for a cosine head.
    class_weight : dict, "balanced" or None, default=None
        Per-class weights in the loss, as in sklearn.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Training and prediction precision. ``"auto"``: fp32 on the CPU, except
        the training steps of a fit with the activation cache on a CPU with
        native bf16 (AMX / AVX-512 bf16): those run in bf16 autocast with the
        depthwise convolutions in fp32, measured faster and accuracy-neutral
        (see the performance guide); the cache, the head initialisation and
        every prediction stay fp32. On CUDA, bf16 autocast when supported.
        ``policy_["precision"]`` reports what ran. ``"fp32"``: fp32
        everywhere. ``"bf16"`` (autocast + channels_last for everything,
        frozen part and predictions included) is an explicit trade of accuracy
        for speed: for frozen EfficientNet-Lite0 codes it moved them by 8-11%
        (relative L2) and cost 0.9 accuracy points downstream (see
        :class:`CNNFeatureExtractor`); it is emulated (about 10x slower) on
        CPUs without AMX / AVX-512 bf16.
    engine : {"auto", "onnxruntime", "torch"}, default="auto"
        What runs the fine-tuned network in ``predict`` / ``predict_proba`` /
        ``decision_function`` (training always runs in torch).
        ``"onnxruntime"``: the whole fine-tuned network exported to ONNX once
        per fitted model (seconds; kept on disk by the digest of its weights,
        under ``$SKTRANSFER_CACHE_DIR/onnx``, default
        ``~/.cache/sktransfer/onnx``), checked against the network, then run
        by ONNX Runtime (fp32, CPU). ``"torch"``: the eager network.
        ``"auto"``: ONNX Runtime on the CPU in fp32 once a single call predicts
        at least 256 images (the export then pays for itself), torch before
        that, on CUDA and in reduced precision. A fallback to torch (export
        failure, disagreement, onnxruntime missing) is announced by a warning.
        Every ``fit`` discards the engine of the previous model.
    num_workers : int or "auto", default="auto"
        DataLoader workers decoding images for training and prediction.
        ``"auto"``: workers only for files / PIL images that must be decoded
        again each epoch (more than one core, 32 or more images), as in
        :class:`CNNFeatureExtractor`; none when the training images fit in
        memory or are arrays.
    resize : {"squash", "crop"}, default="squash"
        How images are brought to ``input_size``, as in
        :class:`CNNFeatureExtractor`.
    input_shape : tuple of int, default=None
        Shape of one image when ``X`` is a 2-D array of flattened images.
    pixel_range : {"auto"} or None, default="auto"
        ``"auto"``: the dtype decides (uint8 is divided by 255, floats must lie
        in [0, 1]); ``None``: array values are used as they are (already scaled
        or standardized data), as in :class:`CNNFeatureExtractor`.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks, e.g. :class:`sktransfer.callbacks.WeightTracker`.
    cache : None, False, str or path, default=None
        The activation cache (see Notes) lives in this process (RAM, then
        temporary memmap files) whatever this says; a directory (``~``
        expanded) also writes it there, so that other processes (joblib / dask
        workers, later runs) with the same images and network read it instead
        of computing it. ``False`` turns the activation cache off.
    random_state : int, RandomState or None, default=None
        Seeds initialization, the validation split, shuffling, augmentation and
        dropout; the same seed and data give the same predictions on the same
        CPU with the same torch thread count (float sums depend on it).
    verbose : int, default=0
        1: skorch's epoch table; 2: plus a progress bar per epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    net_ : skorch.NeuralNetClassifier
        The trained skorch net (``net_.module_`` is the network; its ``body`` is
        the backbone without its old head).
    history_ : skorch.History
        Per-epoch losses, accuracies, durations (``net_.history``).
    n_epochs_ : int
        Epochs actually run.
    best_epoch_ : int or None
        Epoch whose weights were kept (early stopping), else None.
    n_trainable_params_ : int
        Parameters trained in the main phase (head included).
    preprocessing_ : Preprocessing
        Input size, mean and std in use.
    policy_ : dict
        The values the ``"auto"`` parameters took (``train_layers``,
        ``head_init``, ``augment``, ``augment_views``) and where the activation
        cache cut the network (``"cache"``: ``"after <unit> ..."`` or
        ``"off: <reason>"``), and the arithmetic of the fit (``"precision"``:
        ``"fp32"``, or bf16 training steps; see ``precision``). ``verbose >= 1``
        prints it after fit.
    n_features_in_ : int
        Only set when ``input_shape`` is given.

    See Also
    --------
    CNNFeatureExtractor : frozen CNN codes for any sklearn classifier.

    Notes
    -----
    Frozen parts run without gradients and in inference mode, so a
    ``train_layers="head"`` fit leaves every backbone tensor, BatchNorm running
    statistics included, bit-identical. Only trained tensors reach the
    optimizer. A ``KeyboardInterrupt`` ends training early; with
    ``early_stopping=True`` the best weights so far are restored (a warning
    says so). A non-finite loss stops training with a ``ValueError``.

    **Activation cache.** When the part of the network before the first
    trained layer is frozen (``train_layers`` ``"head"``, an int or a module
    name; BatchNorms ``"frozen"``, ``"eval"`` or ``"adabn"``), ``fit`` runs
    that part once per image (and per augmented view) and every epoch trains
    only the rest: an epoch of ``train_layers=3`` on EfficientNet-Lite0 costs
    a fraction of a forward pass. The cache is shared, within the process, by
    epochs, CV folds and grid candidates that have the same frozen part (same
    images, weights, cut, preprocessing); cuts past the network's last
    downsampling block derive from one shared checkpoint at that block's
    input, so a grid over ``train_layers`` runs the high-resolution layers
    once per image and view. In the same process, ``predict`` starts from
    the stored activations of images a fit has seen (a CV split's held-out
    fold trained in the other split), and LP-FT's head-only epochs train on
    stored outputs of the frozen body when another fit left them. Without
    augmentation the cached fit gives the weights of the uncached one
    (``cache=False``) within float tolerance. ``bn="train"`` and
    ``train_layers="all"`` cannot be cached (``verbose`` says so). The cut
    follows the body's top-level children (the stages of ``blocks`` /
    ``features`` / ``layer`` containers), checked once against the network's
    own forward. The user guide's "The activation cache" has the details.

    **Default policy** (``train_layers``, ``head_init``, ``augment``,
    ``augment_views`` = ``"auto"`` and the defaults ``head="cosine"``,
    ``lr=3e-3``, ``backbone_lr=lr / 3``, ``batch_size=16``,
    ``max_epochs=8``): a cosine head started from the class means (the
    few-shot recipe's ``W = M``), trained together with the blocks at the
    network's final resolution after its last downsampling block
    (EfficientNet-Lite0 at 224 px: ``blocks.5.1`` .. ``bn2``, 7 x 7 maps;
    ResNets: ``layer4.1`` on; a network that never downsamples, like a ViT:
    the last 3 stages), with flip + translate augmentation, 4 precomputed
    views per image. The rule does not depend on the number of images: the
    cost of a fit grows linearly with it. ``policy_`` reports the values used.
    For a linear head, ``head_init="auto"`` is LP-FT (the exact linear probe
    as the head's start).

    Few images per class (benchmarks/fashion_lowdata.py, 20 per class): train
    the head first and only the last stages, start the head from the class
    means, augment, and keep the weights' own resolution, e.g.
    ``input_size=224, train_layers=4, freeze_epochs=2, max_epochs=10,
    head="cosine", head_init="class_means", augment=["flip", "translate"],
    label_smoothing=0.1, lr=3e-3, backbone_lr=1e-3`` for EfficientNet-Lite0.
    Its measured scores are in the user guide (:ref:`fine_tuning`).

    Examples
    --------
    A new head on ImageNet EfficientNet-Lite0 (weights shipped offline), trained
    on 200 images of the bundled Fashion-MNIST sample (small and quick; see the
    user guide for a recipe that scores higher):

    >>> from sktransfer import FineTunedClassifier
    >>> from sktransfer.datasets import load_fashion_mnist_sample
    >>> X, y = load_fashion_mnist_sample(return_X_y=True)
    >>> X_test, y_test = load_fashion_mnist_sample(subset="test", return_X_y=True)
    >>> clf = FineTunedClassifier(model="efficientnet_lite0", input_size=64,
    ...                           train_layers="head", lr=1e-2, max_epochs=3,
    ...                           precision="fp32", random_state=0)
    >>> clf = clf.fit(X[:200], y[:200])
    >>> clf.score(X_test[:200], y_test[:200]) > 0.4  # 10 classes: chance is 0.1
    True
    >>> clf.predict_proba(X_test[:3]).shape, clf.n_epochs_
    ((3, 10), 3)

    Grid-search the fine-tuning strategy like any other hyper-parameter (on a
    tiny random network here, to keep the example fast):

    >>> from sklearn.model_selection import GridSearchCV
    >>> tiny = FineTunedClassifier(model="timm/test_efficientnet", weights=None,
    ...                            input_size=16, max_epochs=2, random_state=0)
    >>> grid = GridSearchCV(tiny, {"train_layers": ["head", "all"]}, cv=2)
    >>> grid.fit(X[:24], y[:24] % 2).best_params_["train_layers"] in ("head", "all")
    True
    """

    _parameter_constraints = {
        **_ImageEstimatorMixin._parameter_constraints,
        "train_layers": [
            StrOptions({"auto", "head", "all"}),
            Interval(Integral, 0, None, closed="left"),
            str,
        ],
        "bn": [StrOptions({"frozen", "eval", "train", "adabn"})],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "backbone_lr": [Interval(Real, 0, None, closed="left"), None],
        "optimizer": [StrOptions({"adamw", "sgd"})],
        "scheduler": [StrOptions({"cosine", "onecycle"}), None],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "l1": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "drop_path": [Interval(Real, 0, 1, closed="left")],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "monitor": [StrOptions({"valid_loss", "valid_acc"})],
        "augment": [str, list, tuple, callable, None],
        "augment_views": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "head": [StrOptions({"linear", "cosine"})],
        "head_init": [
            StrOptions({"auto", "xavier", "normal", "zeros", "class_means", "lp"})
        ],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "callbacks": [list, None],
        "cache": [str, os.PathLike, "boolean", None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        model="efficientnet_lite0",
        weights="imagenet",
        input_size=None,
        train_layers="auto",
        bn="frozen",
        lr=3e-3,
        backbone_lr=None,
        optimizer="adamw",
        scheduler="cosine",
        freeze_epochs=0,
        max_epochs=8,
        batch_size=16,
        weight_decay=1e-2,
        l1=0.0,
        dropout=0.0,
        drop_path=0.0,
        label_smoothing=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        patience=3,
        monitor="valid_loss",
        augment="auto",
        augment_views="auto",
        head="cosine",
        head_init="auto",
        class_weight=None,
        device="auto",
        precision="auto",
        engine="auto",
        num_workers="auto",
        resize="squash",
        input_shape=None,
        pixel_range="auto",
        callbacks=None,
        cache=None,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.weights = weights
        self.input_size = input_size
        self.train_layers = train_layers
        self.bn = bn
        self.lr = lr
        self.backbone_lr = backbone_lr
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.freeze_epochs = freeze_epochs
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.l1 = l1
        self.dropout = dropout
        self.drop_path = drop_path
        self.label_smoothing = label_smoothing
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.monitor = monitor
        self.augment = augment
        self.augment_views = augment_views
        self.head = head
        self.head_init = head_init
        self.class_weight = class_weight
        self.device = device
        self.precision = precision
        self.engine = engine
        self.num_workers = num_workers
        self.resize = resize
        self.input_shape = input_shape
        self.pixel_range = pixel_range
        self.callbacks = callbacks
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fine-tune a fresh copy of the pretrained network on ``(X, y)``.

        Parameters
        ----------
        X : images
            An ``(n, h, w)``, ``(n, h, w, c)`` or ``(n, c, h, w)`` array (uint8
            or float in [0, 1]), a list of PIL images or arrays, a list of file
            paths, or a 2-D array of flattened images with ``input_shape``.
        y : array-like of shape (n_samples,)
            Labels of any type.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights in the loss (multiplied by ``class_weight``).

        Returns
        -------
        self : FineTunedClassifier
        """
        self._reset()
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                f"is None."
            )
        images = self._check_X(X, reset=True)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.ndim != 1 or len(y) != len(images):
            raise ValueError(
                f"y must be 1-D with one label per image; got shape {y.shape} for "
                f"{len(images)} images."
            )
        check_no_missing_labels(y)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has a single class ({self.classes_[0]!r}); one class is not "
                f"enough, a classifier needs at least 2."
            )
        y_enc = encoder.transform(y).astype(np.int64)
        weight = check_sample_weight(sample_weight, np.empty((len(y), 1)))
        if self.class_weight is not None:
            weight = weight * compute_sample_weight(self.class_weight, y)
        weight = weight.astype(np.float32)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        runtime = resolve_policy(self.device, self.precision, self.engine)
        self._fit(images, y_enc, weight, seed, runtime)  # owns its RNG streams
        return self

    # ------------------------------------------------------------------ policy
    def _resolve_policy(self, n_images):
        """The values of the ``"auto"`` parameters for ``n_images`` training images."""
        policy = {}
        # "auto" needs the network: resolved in _freeze
        policy["train_layers"] = self.train_layers
        if self.head_init == "auto":
            policy["head_init"] = "lp" if self.head == "linear" else "class_means"
        else:
            policy["head_init"] = self.head_init
        policy["augment"] = _AUTO_AUGMENT if self.augment == "auto" else self.augment
        if self.augment_views == "auto":
            policy["augment_views"] = _AUTO_VIEWS
        else:
            policy["augment_views"] = int(self.augment_views)
        if policy["head_init"] == "lp" and self.head != "linear":
            raise ValueError(
                f"head_init='lp' fits a linear head exactly (logistic regression), "
                f"but head={self.head!r}. Use head='linear', or "
                f"head_init='class_means' for a cosine head."
            )
        if policy["head_init"] == "zeros" and self.head == "cosine":
            raise ValueError(
                "head_init='zeros' gives a cosine head rows without a direction "
                "(it scores directions only, so every class would tie). Use "
                "head_init='class_means', 'xavier' or 'normal', or head='linear'."
            )
        return policy

    # ----------------------------------------------------------------- phases
    def _build_module(self, n_classes, generator):
        net, prep = load_backbone(self.model, self.weights)
        prep = prep.override(input_size=self.input_size, resize=self.resize)
        head_name = find_head(net)
        self._state_keys = list(net.state_dict())
        self._head_name = head_name
        sizes = strip_head(net) if head_name is not None else None
        out = self._probe(net.eval(), prep, n=2)
        n_features = int(out.flatten(1).shape[1]) if sizes is None else sizes[0]
        drop_sites = set_drop_path(net, self.drop_path) if self.drop_path else []
        if self.drop_path > 0 and not drop_sites:
            raise ValueError(
                f"drop_path={self.drop_path} but {type(net).__name__} has no "
                f"residual blocks with a stochastic-depth slot (supported: timm "
                f"EfficientNet/MobileNet/ResNet/ConvNeXt/ViT, torchvision "
                f"EfficientNet/ConvNeXt/Swin). Use drop_path=0."
            )
        head = build_head(
            self.head, self.policy_["head_init"], n_features, n_classes, generator
        )
        return FineTuneModule(net, head, self.dropout, self.bn), prep, drop_sites

    def _freeze(self, module, drop_sites):
        """Set ``requires_grad`` per ``train_layers`` / ``bn``; the trained names."""
        if self.train_layers == "auto":
            p = self.preprocessing_
            probe = torch.zeros(2, p.in_chans, *p.input_size)
            start = last_resolution_blocks(module.body, probe)
            self.policy_["train_layers"] = (
                _AUTO_TRAIN_LAYERS if start is None else start
            )
        trainable = resolve_trainable(module.body, self.policy_["train_layers"])
        if self.bn == "train":
            trainable |= {
                f"{name}.{p}"
                for name, m in module.body.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p, _ in m.named_parameters(recurse=False)
            }
        for name, p in module.body.named_parameters():
            p.requires_grad_(name in trainable)
        dropped = [
            site
            for site in drop_sites
            if any(name.startswith(f"{site}.") for name in trainable)
        ]
        if drop_sites and not dropped:
            warnings.warn(
                f"drop_path={self.drop_path} has no effect: none of the blocks "
                f"that can be skipped ({', '.join(drop_sites[-3:])}, ...) "
                f"is trained with train_layers={self.policy_['train_layers']!r}, "
                f"and frozen blocks never drop. Train more layers or use "
                f"drop_path=0.",
                UserWarning,
                stacklevel=4,
            )
        return trainable

    def _split(self, y, seed):
        """Train / validation indices; every class keeps a training image."""
        idx = np.arange(len(y))
        if not self.early_stopping:
            return idx, None
        try:
            train, valid = train_test_split(
                idx, test_size=self.validation_fraction, stratify=y, random_state=seed
            )
        except ValueError:  # a class too small to stratify: plain random split
            train, valid = train_test_split(
                idx, test_size=self.validation_fraction, random_state=seed
            )
        # A class whose images all went to validation would never be trained on:
        # give one of them back.
        lost = np.setdiff1d(np.unique(y), y[train])
        if len(lost):
            back = np.array([valid[y[valid] == k][0] for k in lost])
            train = np.sort(np.concatenate([train, back]))
            valid = np.setdiff1d(valid, back)
            warnings.warn(
                f"early_stopping: {len(lost)} class(es) have too few images to be "
                f"both trained on and validated (e.g. {self.classes_[lost[:3]]}); "
                f"they are kept for training only, so the validation score does "
                f"not cover them. Add images or use early_stopping=False.",
                UserWarning,
                stacklevel=5,  # _split < _fit < fit < _fit_context < caller
            )
        if len(valid) == 0:
            raise ValueError(
                f"early_stopping=True needs a validation set, but {len(y)} images "
                f"leave none once every class keeps a training image. Use more "
                f"images, a larger validation_fraction, or early_stopping=False."
            )
        return train, valid

    def _cache_dir(self):
        if isinstance(self.cache, bool):
            return None
        root = resolve_cache_dir(self.cache)
        return None if root is None else Path(os.path.expanduser(str(root)))

    def _activations(self, module, full, images, config, seed, device):
        """The frozen prefix's outputs (an :class:`ActivationSet`), or None.

        None (with the reason in ``policy_["cache"]``) when the part before the
        first trained layer cannot be cached.
        """
        probe = full.pre.normalize(full.image(0)[None].expand(2, -1, -1, -1))
        if self.cache is False:
            cut, reason = None, "cache=False"
        else:
            cut, reason = plan_cut(
                module.body, config.trainable, self.bn, probe.to(device)
            )
        if cut is None:
            self.policy_["cache"] = f"off: {reason}"
            if self.verbose:
                print(
                    f"[FineTunedClassifier] activation cache off ({reason}): every "
                    f"epoch runs the whole network."
                )
            return None
        units = cache_units(module.body, config.trainable)
        checkpoint = checkpoint_index(
            units, last_downsampling_block(module.body, probe.to(device))
        )
        transform = make_augmentation(self.policy_["augment"], full.pre.p.input_size)
        views = self.policy_["augment_views"] if transform is not None else 0
        root = self._cache_dir()
        acts = ActivationSet(
            units,
            cut,
            full,
            image_digests(images),
            spec=(
                f"finetune-prefix|{state_digest(module.body)}"
                f"|{full.pre.p}|autocast={config.autocast}"
            ),
            transform=transform,
            n_views=views,
            view_seed=seed,
            device=device,
            autocast=config.autocast,
            batch_size=self.batch_size,
            disk=None if root is None else (lambda spec, w: CodeCache(root, spec, w)),
            checkpoint=checkpoint,
        )
        self.policy_["cache"] = (
            f"after {units[cut - 1][0]} ({cut} of {len(units)} units frozen), "
            f"{views} augmented view(s) per image"
        )
        if acts.source is not None:
            self.policy_["cache"] += (
                f", derived from the shared checkpoint after {units[checkpoint - 1][0]}"
            )
        if self.verbose:
            print(f"[FineTunedClassifier] activation cache at {self.policy_['cache']}")
        return acts

    def _init_head(self, module, data, device, y, weight):
        """``head_init="class_means"`` / ``"lp"``: the head from frozen features."""
        init = self.policy_["head_init"]
        if init not in ("class_means", "lp"):
            return
        stored = getattr(data.train, "head_rows", None)
        if stored is not None:  # the frozen body's outputs, already stored
            feats = torch.stack([stored.get(i, 0) for i in data.train_idx]).flatten(1)
            labels = torch.as_tensor(y[data.train_idx])
        else:
            feats, labels = frozen_features(module, data.plain, device)
        n_classes = len(self.classes_)
        with torch.no_grad():
            if init == "class_means":
                module.head.weight.copy_(class_means(feats, labels, n_classes))
                if getattr(module.head, "bias", None) is not None:
                    module.head.bias.zero_()
            else:
                w_train = None if weight is None else weight[data.train_idx]
                w, b = fit_linear_probe(
                    feats.numpy(),
                    y[data.train_idx],
                    n_classes,
                    self.weight_decay,
                    w_train,
                )
                module.head.weight.copy_(w)
                module.head.bias.copy_(b)

    def _fit(self, images, y, weight, seed, runtime):
        """The phases of ``fit``: module, data, head, training, fitted state.

        ``runtime`` is the fit's :class:`~sktransfer._runtime.RuntimePolicy`.
        """
        device = runtime.device
        self.policy_ = self._resolve_policy(len(images))
        if device.type == "cpu":
            keep_freed_memory()  # autograd's buffers, reused instead of re-faulted
        rng = OwnedRNG(seed, device)
        gen = torch.Generator().manual_seed(seed)
        module, prep, drop_sites = self._build_module(len(self.classes_), gen)
        self.preprocessing_ = prep
        trainable = self._freeze(module, drop_sites)
        module.to(device)
        config = TrainConfig(
            trainable=frozenset(trainable),
            lr=self.lr,
            backbone_lr=self.lr / 3 if self.backbone_lr is None else self.backbone_lr,
            weight_decay=self.weight_decay,
            l1=self.l1,
            optimizer=self.optimizer,
            freeze_epochs=min(self.freeze_epochs, self.max_epochs),
        ).with_policy(runtime)
        if config.channels_last:
            # before the activation cache: its prefix runs as the uncached fit's
            module.to(memory_format=torch.channels_last)
        split = self._split(y, seed)
        data = self._prepare_data(
            module, images, y, weight, split, config, seed, rng, device
        )
        if data.acts is not None:
            # only the units after the cached prefix run in the steps: the
            # frozen part stays what the cache computed (fp32 on the CPU)
            config = config.with_policy(runtime, cached=True)
        self.policy_["precision"] = _precision_policy(config, runtime)
        self._init_head(module, data, device, y, weight)
        net, best = self._train(module, data, config, seed, rng, device)
        self._finish(net, module, best, config.trainable, data.acts)
        return self

    def _prepare_data(
        self, module, images, y, weight, split, config, seed, rng, device
    ):
        """The training / validation datasets: images, or cached activations.

        With the activation cache, ``module.cut`` is set: the module then takes
        the frozen prefix's outputs until ``_finish``.
        """
        train_idx, valid_idx = split
        full = ImageDataset(images, Preprocessor(self.preprocessing_), y, weight)
        if self.bn == "adabn":
            adabn(module, make_loader(full.subset(train_idx), self.batch_size), device)
        acts = self._activations(module, full, images, config, seed, device)
        draw = None
        if acts is None:
            train = full.subset(train_idx)
            valid = None if valid_idx is None else full.subset(valid_idx)
            plain = train
            transform = make_augmentation(
                self.policy_["augment"], self.preprocessing_.input_size
            )
            if transform is not None:
                train = train.with_transform(SeededTransform(transform, rng))
            in_memory = full.cache is not None and self.num_workers == "auto"
            workers = 0 if in_memory else resolve_num_workers(self.num_workers, images)
        else:
            module.cut = acts.suffix
            head_rows = acts.body_outputs() if config.freeze_epochs else None
            if head_rows is not None:
                module.phase_cuts = {"head": [], "body": acts.suffix}
                self.policy_["cache"] += "; head-only epochs on stored body outputs"
            train = CachedDataset(acts, train_idx, y, weight, head_rows)
            valid = (
                None
                if valid_idx is None
                else CachedDataset(acts, valid_idx, y, head_rows=head_rows)
            )
            plain = train.clean()
            if acts.n_views:
                draw = DrawViews(train, acts.n_views, seed)
            workers = 0
        return _FitData(
            train=train,
            valid=valid,
            plain=make_loader(plain, self.batch_size),
            train_idx=train_idx,
            draw=draw,
            num_workers=workers,
            acts=acts,
        )

    def _fit_callbacks(self, config, data, steps_per_epoch, best):
        """Our callbacks, the user's, then early stopping (which may end the fit)."""
        callbacks = [("phase", PhaseSwitch()), ("nan_guard", NaNGuard())]
        if data.draw is not None:
            callbacks.append(("draw_views", data.draw))
        if self.scheduler is not None:
            schedule = lr_schedule(
                self.scheduler, config.freeze_epochs, self.max_epochs, steps_per_epoch
            )
            callbacks.append(("schedule", schedule))
        if self.verbose > 1:
            from skorch.callbacks import ProgressBar

            callbacks.append(("progress", ProgressBar()))
        for i, cb in enumerate(self.callbacks or []):
            callbacks.append(_named_callback(cb, i))
        callbacks.append(("best_weights", best))
        return callbacks

    def _train(self, module, data, config, seed, rng, device):
        """skorch's training loop; the net and its :class:`BestWeights` callback.

        Validation (early stopping) and the returned model use exact BatchNorm
        statistics: the moving averages of a short fine-tune still mix in the
        old data's statistics.
        """
        n_train = len(data.train)
        drop_last = n_train > self.batch_size and n_train % self.batch_size == 1
        steps = -(-n_train // self.batch_size) - drop_last
        best = BestWeights(self.monitor, self.patience, data.valid is not None)
        net = self._skorch_net(
            module,
            device,
            config,
            iterator_train__shuffle=True,
            iterator_train__seed=seed,
            iterator_train__num_workers=data.num_workers,
            iterator_train__drop_last=drop_last,
            train_split=None if data.valid is None else predefined_split(data.valid),
            callbacks=self._fit_callbacks(config, data, steps, best),
            verbose=self.verbose,
        )
        net.rng_ = rng if is_stochastic(module) else None
        steps_in = contextlib.nullcontext()
        if config.step_autocast is not None:
            p = self.preprocessing_
            probe = torch.zeros(2, p.in_chans, *p.input_size, device=device)
            steps_in = fp32_convs(bf16_unsafe_convs(module.body, probe))
        bns = module.trained_bns(config.trainable)
        if data.valid is not None and bns:

            def exact_bn():  # validate on the statistics the model will have
                if module.phase == "body":
                    recalibrate_bn(module, data.plain, device, bns)

            net.before_valid_ = exact_bn
        with steps_in:
            net.fit(data.train, None)
        if module.phase_cuts is not None:  # the plain loader holds rows at the cut
            module.cut = module.phase_cuts["body"]
        recalibrate_bn(module, data.plain, device, bns)
        return net, best

    def _skorch_net(self, module, device, config, **kwargs):
        """The skorch net around ``module``: what ``fit`` trains and ``load`` rebuilds.

        ``config`` is the :class:`TrainConfig`; ``kwargs`` add the training-only
        settings (loaders, split, callbacks).
        """
        return FineTuneNet(
            module,
            criterion=WeightedCrossEntropy(self.label_smoothing),
            optimizer=torch.optim.SGD if self.optimizer == "sgd" else torch.optim.AdamW,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train=make_loader,
            iterator_valid=make_loader,
            predict_nonlinearity=softmax,
            classes=list(range(len(self.classes_))),
            device=str(device),
            config=config,
            **{"train_split": None, "verbose": 0, **kwargs},
        )

    def _finish(self, net, module, best, trainable, acts=None):
        """Keep the fitted state only: no optimizer moments, data or caches.

        Predictions may still start from the activation stores (held by the
        process, not the model): their specs go to the derived state.
        """
        module.cut = module.phase_cuts = None  # predictions take images
        if acts is not None:
            self._derived()["stores"] = acts.shortcuts()
        net.optimizer_.state.clear()
        net.train_split = None
        net.l1_params_ = []
        net.rng_ = None
        net.before_valid_ = None
        for _, cb in net.callbacks_:
            if isinstance(cb, DrawViews):
                cb.dataset = None  # the activations are not part of the model
            if isinstance(cb, LRScheduler):
                cb.lr_scheduler_ = None  # it holds the optimizer: a second copy
        # skorch pickles its ``module`` argument apart from ``module_``: a second
        # copy of every weight. Keep the class only (fit builds a new net anyway).
        net.module = type(module)
        module.eval()
        self.net_ = net
        self.n_epochs_ = best.epochs_done_
        self.best_epoch_ = best.best_epoch_
        self.n_trainable_params_ = int(
            sum(
                p.numel()
                for n, p in module.named_parameters()
                if not n.startswith("body.") or n[5:] in trainable
            )
        )
        if self.verbose:
            print(f"[FineTunedClassifier] policy: {self.policy_}")

    @property
    def history_(self):
        """The skorch history of the last fit (``net_.history``)."""
        check_is_fitted(self, "net_")
        return self.net_.history

    # --------------------------------------------------------------- predicting
    def _logits(self, X):
        check_is_fitted(self, "net_")
        images = self._check_X(X, reset=False)
        logits = torch.empty(len(images), len(self.classes_))
        todo = self._logits_from_stores(images, logits)
        if len(todo):
            run = self._predict_engine(len(todo))
            pre = Preprocessor(self.preprocessing_)
            batches = iter_batches(
                images,
                pre,
                self.batch_size,
                num_workers=self.num_workers,
                indices=None if len(todo) == len(images) else todo,
            )
            outs = [forward_halving(run, batch) for batch in batches]
            logits[todo] = torch.cat(outs).float()
        return logits

    def _logits_from_stores(self, images, logits):
        """Fill ``logits`` of the images whose frozen activations are stored.

        The activation stores of this process (see
        :mod:`sktransfer._activations`) hold the frozen part's output of the
        clean training images of every fit that shares it: in a CV split, the
        held-out fold of one split trained in the other. Those images run only
        the units after the store, exactly the fitted network's computation
        (the frozen units before it are checked unchanged since the rows were
        computed). CPU, fp32, ``engine="auto"`` only. Returns the indices
        still to predict.
        """
        todo = np.arange(len(images))
        stores = self._derived().get("stores")
        net = self.net_
        if (
            not stores
            or self.engine != "auto"
            or net.config.autocast is not None
            or torch.device(net.device).type != "cpu"
        ):
            return todo
        digests = image_digests(images)
        module = net.module_.eval()
        for spec, prefix, units, fingerprint in stores:
            if units_fingerprint(prefix) != fingerprint:
                continue  # the frozen units changed since the rows were stored
            found, rows = lookup(spec, digests[todo])
            if rows is None:
                continue
            idx = todo[found]
            with torch.inference_mode():
                for start in range(0, len(idx), 64):
                    x = rows[start : start + 64]
                    if net.config.channels_last and x.ndim == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    logits[idx[start : start + 64]] = module.logits_from(units, x)
            todo = todo[~found]
            if not len(todo):
                break
        return todo

    def _predict_engine(self, n_images):
        """The engine that runs the fitted network for ``n_images`` images.

        Built lazily once per fitted model: torch first; with ``engine="auto"``
        ONNX Runtime from the first call on ``engine_min_images`` images (the
        export costs seconds; :class:`~sktransfer._runtime.RuntimePolicy`),
        with ``"onnxruntime"`` from the first call. Kept in ``_derived()``:
        never pickled, and replaced by every ``fit``.
        """
        net = self.net_
        derived = self._derived()
        engine = derived.get("engine")
        if derived.get("engine_param") != self.engine:
            engine = None  # set_params(engine=...) after fit takes effect
        elif engine is not None and (engine.kind != "torch" or derived["settled"]):
            return engine
        runtime = resolve_policy(torch.device(net.device), self.precision, self.engine)
        if runtime.engine == "onnxruntime" and (
            self.engine == "onnxruntime" or n_images >= runtime.engine_min_images
        ):
            module = net.module_
            p = self.preprocessing_
            engine = build_engine(
                module,
                policy=runtime,
                input_shape=(p.in_chans, *p.input_size),
                digest=lambda: state_digest(module),
                what=f"fine-tuned {type(module.head).__name__} logits",
            )
            settled = True  # ONNX Runtime, or torch after a warned fallback
        elif engine is None:
            engine = TorchEngine(net.module_, runtime)
            settled = runtime.engine == "torch"
        else:
            return engine
        derived.update(engine=engine, settled=settled, engine_param=self.engine)
        return engine

    def decision_function(self, X):
        """Logits of the fine-tuned network.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two
            classes (logit of ``classes_[1]`` minus logit of ``classes_[0]``).
        """
        # float64 from here on: the difference and the softmax are then both
        # monotonic in the exact logit gap, so they rank images identically.
        logits = self._logits(X).double().numpy()
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return torch.softmax(self._logits(X).double(), dim=1).numpy()

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        return torch.log_softmax(self._logits(X).double(), dim=1).numpy()

    def predict(self, X):
        """Predicted labels (same type as the ``y`` given to ``fit``).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "net_")  # before classes_ is read
        return self.classes_[self._logits(X).argmax(1).numpy()]

    # ------------------------------------------------------------------ export
    def save_backbone(self, path):
        """Write the fine-tuned network as a state dict of the original architecture.

        ``CNNFeatureExtractor(model=<same model>, weights=path)`` then computes
        fine-tuned CNN codes, and ``FineTunedClassifier(weights=path)`` starts from
        them (pretrain on a large dataset, then few-shot on new classes). The new
        head is saved in the place of the old one (the loader resizes it).

        Parameters
        ----------
        path : str or path-like
            ``.safetensors`` writes safetensors; anything else ``torch.save``.

        Returns
        -------
        path : pathlib.Path
        """
        check_is_fitted(self, "net_")
        state = export_state(self.net_.module_, self._head_name, self._state_keys)
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(path))
        else:
            torch.save(state, str(path))
        return path

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        # Feature rows read as 1 x d "images" (input_shape set) are not what a
        # CNN is for: sklearn's accuracy thresholds on blobs do not apply.
        tags.classifier_tags.poor_score = self.input_shape is not None
        return tags
