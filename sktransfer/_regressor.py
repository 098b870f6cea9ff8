"""FineTunedRegressor: fine-tune a pretrained network for real-valued targets.

The fit is the fine-tuning core's (:mod:`sktransfer._finetune_base`); this
declares the targets (standardized inside), the loss, the ridge head start and
the output scale.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from ._finetune_base import BaseFineTuned, fill_param_docs
from ._heads import fit_ridge_probe
from ._labels import check_sample_weight
from ._trainer import FineTuneMultiOutputNet, WeightedLoss, identity

__all__ = ["FineTunedRegressor"]


@fill_param_docs
class FineTunedRegressor(RegressorMixin, BaseFineTuned):
    """Fine-tune a pretrained CNN to predict real values: one sklearn regressor.

    ``fit`` loads clean pretrained weights, replaces the network's classifier
    by a linear head with one output per target, freezes what
    ``train_layers`` says and trains with skorch, as
    :class:`FineTunedClassifier` does (the same parameters, the activation
    cache with augmented views, early stopping, ``sample_weight``,
    ``save`` / ``load``, the ONNX engine for ``predict``). The targets are
    standardized inside (``target_mean_``, ``target_scale_``); ``predict``
    returns them on their own scale and ``score`` is R².

    The estimator cannot know what a target means: flips and shifts change
    geometric targets (an angle, a position, a left-right asymmetry), so the
    default trains without augmentation. Pass ``augment="flip"`` (or others)
    when the target does not change under it (a count, an age, a score).

    Parameters
    ----------
    {{params: model, weights, input_size}}
    train_layers : {"auto", "head", "all"}, int or str, default=4
        What is trained besides the new head, as in
        :class:`FineTunedClassifier`; the default is the last 4 stages (for
        EfficientNet-Lite0 ``blocks.5`` on), one stage more than the
        classifier's ``"auto"``: values such as an angle need more than the
        last blocks re-learnt (see Notes).
    {{params: bn}}
    lr : float, default=1e-2
        Learning rate of the head (see Notes).
    {{params: backbone_lr, layer_decay, optimizer, scheduler, freeze_epochs}}
    max_epochs : int, default=15
        Epochs in all (``freeze_epochs`` included).
    {{params: batch_size}}
    {{params: weight_decay, l1, dropout, drop_path}}
    loss : {"squared_error", "huber", "absolute_error"}, default="squared_error"
        The training loss on the standardized targets, averaged over the
        targets of an image; ``"huber"`` is quadratic within one standard
        deviation of the target and linear beyond (robust to outliers).
    {{params: early_stopping, validation_fraction, patience}}
    augment : "auto", None, str, list of str or callable, default="auto"
        Training-time augmentation, as in :class:`FineTunedClassifier`;
        ``"auto"`` is none here (see above).
    {{params: augment_views, tta}}
    head_init : {"auto", "ridge", "xavier", "normal", "zeros"}, default="auto"
        Initial head weights. ``"ridge"`` (``"auto"``; the regressor's LP-FT):
        the exact ridge regression of the standardized targets on the frozen
        network's features of the un-augmented training images, with the
        fine-tune's own L2 (``weight_decay / 2 * ||W||**2`` on the mean squared
        error: sklearn's ``Ridge(alpha=weight_decay * n_targets * n_train /
        2)``, sample-weighted); fine-tuning starts from it. ``"normal"`` uses
        std 0.01; ``"zeros"`` starts every prediction at the targets' mean.
    {{params: device, precision, engine, num_workers, resize, input_shape}}
    {{params: pixel_range, callbacks, cache, random_state, verbose}}

    Attributes
    ----------
    target_mean_ : ndarray of shape (n_targets,)
        Mean of each training target (``sample_weight`` not applied).
    target_scale_ : ndarray of shape (n_targets,)
        Standard deviation of each training target (1 for a constant one).
    net_ : skorch.NeuralNet
        The trained skorch net (``net_.module_`` is the network; its ``body``
        is the backbone without its old head).
    history_ : skorch.History
        Per-epoch losses and durations (``net_.history``).
    n_epochs_ : int
        Epochs actually run.
    best_epoch_ : int or None
        Epoch whose weights were kept (early stopping), else None.
    n_trainable_params_ : int
        Parameters trained in the main phase (head included).
    preprocessing_ : Preprocessing
        Input size, mean and std in use.
    policy_ : dict
        What the ``"auto"`` parameters resolved to and where the activation
        cache cut the network, as in :class:`FineTunedClassifier`.
    n_features_in_ : int
        Only set when ``input_shape`` is given.

    See Also
    --------
    FineTunedClassifier : the same fine-tuning for labels.

    Notes
    -----
    The defaults (``train_layers=4``, ``lr=1e-2``, ``max_epochs=15``, no
    augmentation) were chosen with ``benchmarks/regression.py`` on two tasks
    of real images (the angle of a turned Fashion-MNIST item, the number of
    items in a mosaic; 300 training images, EfficientNet-Lite0 at 224 px) and
    measured on samples not used to choose them; the user guide's "Targets"
    page has the numbers. Flip-free ``augment="translate"`` did not pay for
    its cost there.
    CNNFeatureExtractor : frozen CNN codes for any sklearn regressor (Ridge).

    Examples
    --------
    A tiny random network learning the brightness of noise images (offline
    and quick; see the user guide's "Targets" page for real weights):

    >>> import numpy as np
    >>> from sktransfer import FineTunedRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    >>> y = X.mean(axis=(1, 2, 3)) / 255
    >>> reg = FineTunedRegressor(model="timm/test_efficientnet", weights=None,
    ...                          input_size=32, max_epochs=2, random_state=0)
    >>> reg.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        **BaseFineTuned._parameter_constraints,
        "loss": [StrOptions({"squared_error", "huber", "absolute_error"})],
        "head_init": [StrOptions({"auto", "ridge", "xavier", "normal", "zeros"})],
    }
    _head_inits = ("ridge",)
    _exact_bn_head_start = True
    monitor = "valid_loss"  # what early stopping watches (no accuracy here)

    def __init__(
        self,
        *,
        model="efficientnet_lite0",
        weights="imagenet",
        input_size=None,
        train_layers=4,
        bn="frozen",
        lr=1e-2,
        backbone_lr=None,
        layer_decay=None,
        optimizer="adamw",
        scheduler="cosine",
        freeze_epochs=0,
        max_epochs=15,
        batch_size=16,
        weight_decay=1e-2,
        l1=0.0,
        dropout=0.0,
        drop_path=0.0,
        loss="squared_error",
        early_stopping=False,
        validation_fraction=0.1,
        patience=3,
        augment="auto",
        augment_views="auto",
        tta=None,
        head_init="auto",
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
        self.layer_decay = layer_decay
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.freeze_epochs = freeze_epochs
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.l1 = l1
        self.dropout = dropout
        self.drop_path = drop_path
        self.loss = loss
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.augment = augment
        self.augment_views = augment_views
        self.tta = tta
        self.head_init = head_init
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

    # ------------------------------------------------------------ the targets
    _auto_augment = None  # geometric targets change under flips and shifts

    def _encode_targets(self, y, n_images):
        """Standardized float32 targets of shape (n, n_targets)."""
        y = check_array(
            y, ensure_2d=False, dtype=np.float64, input_name="y", ensure_min_samples=1
        )
        if y.ndim not in (1, 2) or len(y) != n_images:
            raise ValueError(
                f"y must hold one value (1-D) or one row of values (2-D) per "
                f"image; got shape {y.shape} for {n_images} images."
            )
        self._single_target = y.ndim == 1
        y2 = y.reshape(n_images, -1)
        self.target_mean_ = y2.mean(0)
        scale = y2.std(0)
        self.target_scale_ = np.where(scale > 0, scale, 1.0)
        targets = (y2 - self.target_mean_) / self.target_scale_
        return targets.astype(np.float32), y2.shape[1]

    def _sample_weights(self, sample_weight, targets):
        return check_sample_weight(sample_weight, np.empty((len(targets), 1)))

    def _n_outputs(self):
        return len(self.target_mean_)

    # ---------------------------------------------------------------- the head
    def _resolve_head_init(self):
        return "ridge" if self.head_init == "auto" else self.head_init

    def _start_head(self, head, feats, targets, weight, init):
        w, b = fit_ridge_probe(
            feats.numpy(), targets.numpy(), self.weight_decay, weight
        )
        head.weight.copy_(w)
        head.bias.copy_(b)

    def _net_spec(self):
        loss = WeightedLoss(self.loss)
        return FineTuneMultiOutputNet, loss, {"predict_nonlinearity": identity}

    # --------------------------------------------------------------- predicting
    def predict(self, X):
        """Predicted values, on the scale of the ``y`` given to ``fit``.

        Parameters
        ----------
        X : images
            As for :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        check_is_fitted(self, "net_")
        out = self._outputs(X).double().numpy()
        values = out * self.target_scale_ + self.target_mean_
        return values[:, 0] if self._single_target else values

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.target_tags.multi_output = True
        # Feature rows read as 1 x d "images" (input_shape set) are not what a
        # CNN is for: sklearn's score thresholds on toy data do not apply.
        tags.regressor_tags.poor_score = self.input_shape is not None
        return tags
