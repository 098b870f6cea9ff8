"""FineTunedClassifier: fine-tune a pretrained network as one sklearn classifier.

Single-label and multi-label targets; the fit itself is the fine-tuning core's
(:mod:`sktransfer._finetune_base`).
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._finetune_base import BaseFineTuned, fill_param_docs
from ._heads import (
    class_means,
    fit_binary_probes,
    fit_linear_probe,
    fit_temperature,
    label_directions,
)
from ._labels import check_no_missing_labels, check_sample_weight
from ._trainer import (
    FineTuneMultiOutputNet,
    FineTuneNet,
    WeightedLoss,
    sigmoid,
    softmax,
)

__all__ = ["FineTunedClassifier"]

# calibration="auto" fits the temperature on validation splits of at least this
# many images: on 20 (20 per class, 10 %) it raised the expected calibration
# error on 7 of 11 samples (fitted before fit_temperature's prior on log T),
# on 100 (100 per class) it lowered it on both samples
# (benchmarks/results/defaults_final_a.txt, defaults_selection_*.txt,
# defaults_final_calibration.txt; Intel Xeon amx_bf16).
AUTO_CALIBRATION_MIN = 100


@fill_param_docs
class FineTunedClassifier(ClassifierMixin, BaseFineTuned):
    """Fine-tune a pretrained CNN on your images: one sklearn classifier.

    ``fit`` loads clean pretrained weights, replaces the network's classifier by a
    new head for your classes, freezes what ``train_layers`` says (BatchNorm
    statistics included) and trains with skorch. Every parameter is flat, so
    ``GridSearchCV`` can search fine-tuning strategies directly; every fit (a
    clone, a CV fold, a refit) starts again from the pretrained weights.

    ``y`` holds one label per image, or, as scikit-learn's multilabel
    convention has it (and :class:`~sklearn.neural_network.MLPClassifier`), a
    2-D 0/1 indicator matrix of labels per image: the network then has one
    sigmoid output per label trained with binary cross-entropy, ``predict``
    returns the indicator matrix (threshold 0.5) and ``predict_proba`` each
    label's probability.

    Parameters
    ----------
    {{params: model, weights, input_size, train_layers, bn, lr, backbone_lr}}
    {{params: layer_decay}}
    {{params: optimizer, scheduler, freeze_epochs, max_epochs, batch_size}}
    {{params: weight_decay, l1, dropout, drop_path}}
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy (single-label targets only).
    {{params: early_stopping, validation_fraction, patience}}
    monitor : {"valid_loss", "valid_acc"}, default="valid_loss"
        What early stopping watches: the validation loss, or the validation
        accuracy (single-label targets only).
    {{params: augment, augment_views, tta}}
    calibration : {"auto", "temperature"} or None, default="auto"
        ``"temperature"``: with a validation split (``early_stopping=True``),
        fit temperature scaling on it after training: ``predict_proba`` is
        then the softmax (multi-label: the sigmoid) of the logits divided by
        one fitted ``temperature_`` (Guo et al. 2017), which changes
        confidence, never a prediction. ``"auto"``: the same when the split
        holds at least 100 images (fit on fewer, the temperature made the
        expected calibration error worse on most samples measured; on 100 it
        made it better), else none. Without a validation split, or with
        ``None``, ``temperature_`` is 1 (the network's own probabilities); to
        calibrate those, wrap the estimator in
        :class:`~sklearn.calibration.CalibratedClassifierCV` (it costs a fit
        per fold). The user guide's "Calibration" has the measurements.
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
        (the few-shot recipe's ``W = M, b = 0``); for multi-label targets, each
        label's row is the direction from the mean of the images without the
        label to the mean of those with it, and ``"lp"`` is one exact binary
        logistic regression per label. ``"auto"``: ``"lp"`` for a
        linear head, ``"class_means"`` for a cosine head.
    class_weight : dict, "balanced" or None, default=None
        Per-class weights in the loss, as in sklearn.
    {{params: device, precision, engine, num_workers, resize, input_shape}}
    {{params: pixel_range, callbacks, cache, random_state, verbose}}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels; for multi-label targets the label indices
        ``0 .. n_labels - 1`` (the indicator's columns).
    net_ : skorch.NeuralNet
        The trained skorch net (``net_.module_`` is the network; its ``body`` is
        the backbone without its old head).
    history_ : skorch.History
        Per-epoch losses, accuracies, durations (``net_.history``).
    n_epochs_ : int
        Epochs actually run.
    best_epoch_ : int or None
        Epoch whose weights were kept (early stopping), else None.
    temperature_ : float
        The temperature ``predict_proba`` divides the logits by (see
        ``calibration``); 1.0 without a validation split.
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
    fold trained in the other split), and the head-first epochs
    (``freeze_epochs``) train on stored outputs of the frozen body when
    another fit left them. Without
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
    the last 3 stages), with translation augmentation, 4 precomputed
    views per image. The rule does not depend on the number of images: the
    cost of a fit grows linearly with it. ``policy_`` reports the values used.
    For a linear head, ``head_init="auto"`` is LP-FT (the exact linear probe
    as the head's start).

    The defaults were chosen on several samples and tasks and reported on
    samples never used to choose them (the user guide's "How the defaults
    were chosen", :ref:`trust`).

    Examples
    --------
    A new head on ImageNet EfficientNet-Lite0 (weights shipped offline), trained
    on 200 images of the bundled Fashion-MNIST sample (small and quick here: 64
    px, the head only, 3 epochs; the defaults score higher, see the user
    guide):

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

    _multilabel = False  # set by fit; models saved before multi-label existed

    _parameter_constraints = {
        **BaseFineTuned._parameter_constraints,
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "monitor": [StrOptions({"valid_loss", "valid_acc"})],
        "head": [StrOptions({"linear", "cosine"})],
        "head_init": [
            StrOptions({"auto", "xavier", "normal", "zeros", "class_means", "lp"})
        ],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "calibration": [StrOptions({"auto", "temperature"}), None],
    }
    _head_inits = ("class_means", "lp")

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
        layer_decay=None,
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
        tta=None,
        calibration="auto",
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
        self.label_smoothing = label_smoothing
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.monitor = monitor
        self.augment = augment
        self.augment_views = augment_views
        self.tta = tta
        self.calibration = calibration
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

    # ------------------------------------------------------------ the targets
    def _encode_targets(self, y, n_images):
        """Class indices, or a 0/1 float indicator matrix for multi-label ``y``."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.ndim == 2 and len(y) == n_images:
            return self._encode_indicator(y)
        if y.ndim != 1 or len(y) != n_images:
            raise ValueError(
                f"y must be 1-D with one label per image, or a 2-D 0/1 indicator "
                f"matrix with one row per image (multi-label); got shape "
                f"{y.shape} for {n_images} images."
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
        self._multilabel = False
        return encoder.transform(y).astype(np.int64), len(self.classes_)

    def _encode_indicator(self, y):
        if type_of_target(y) != "multilabel-indicator" or not np.isin(y, (0, 1)).all():
            raise ValueError(
                f"a 2-D y is read as a multi-label indicator matrix and must hold "
                f"0 and 1 only (scikit-learn's multilabel-indicator), got "
                f"{type_of_target(y)!r} targets with values {np.unique(y)[:5]}. "
                f"Pass one label per image as a 1-D array, or binarize the labels with "
                f"sklearn.preprocessing.MultiLabelBinarizer."
            )
        if self.monitor == "valid_acc":
            raise ValueError(
                "monitor='valid_acc' is single-label accuracy; multi-label "
                "training monitors monitor='valid_loss'."
            )
        if self.class_weight is not None:
            raise ValueError(
                "class_weight weighs the rows of single-label classes; for "
                "multi-label y use sample_weight."
            )
        if self.label_smoothing:
            raise ValueError(
                "label_smoothing applies to single-label cross-entropy; "
                "multi-label training uses binary cross-entropy without it."
            )
        self.classes_ = np.arange(y.shape[1])
        self._multilabel = True
        return np.asarray(y, dtype=np.float32), y.shape[1]

    def _sample_weights(self, sample_weight, targets):
        weight = check_sample_weight(sample_weight, np.empty((len(targets), 1)))
        if self.class_weight is not None:  # its keys are the labels of y
            labels = self.classes_[targets]
            weight = weight * compute_sample_weight(self.class_weight, labels)
        return weight

    @property
    def _coverage_name(self):
        return "label(s)" if self._multilabel else "class(es)"

    def _coverage(self, y):
        if self._multilabel:
            return y > 0.5
        return y[:, None] == np.arange(len(self.classes_))

    def _n_outputs(self):
        return len(self.classes_)

    # ---------------------------------------------------------------- the head
    def _resolve_head_init(self):
        init = self.head_init
        if init == "auto":
            init = "lp" if self.head == "linear" else "class_means"
        if init == "lp" and self.head != "linear":
            raise ValueError(
                f"head_init='lp' fits a linear head exactly (logistic regression), "
                f"but head={self.head!r}. Use head='linear', or "
                f"head_init='class_means' for a cosine head."
            )
        if init == "zeros" and self.head == "cosine":
            raise ValueError(
                "head_init='zeros' gives a cosine head rows without a direction "
                "(it scores directions only, so every class would tie). Use "
                "head_init='class_means', 'xavier' or 'normal', or head='linear'."
            )
        return init

    def _start_head(self, head, feats, targets, weight, init):
        n = len(self.classes_)
        if init == "class_means":
            if self._multilabel:  # per label: positives' mean minus negatives'
                head.weight.copy_(label_directions(feats, targets))
            else:
                head.weight.copy_(class_means(feats, targets, n))
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()
            return
        probe = fit_binary_probes if self._multilabel else fit_linear_probe
        w, b = probe(feats.numpy(), targets.numpy(), n, self.weight_decay, weight)
        head.weight.copy_(w)
        head.bias.copy_(b)

    def _calibrate(self, net, data, y):
        """Temperature scaling on the validation split (``calibration``)."""
        self.temperature_ = 1.0
        if data.valid is None or self.calibration is None:
            return
        if self.calibration == "auto" and len(data.valid_idx) < AUTO_CALIBRATION_MIN:
            return
        if hasattr(data.valid, "phase"):  # cached rows at the trained body's cut
            data.valid.phase = "body"
        logits = net.forward(data.valid, training=False)
        targets = torch.as_tensor(y[data.valid_idx])
        self.temperature_ = fit_temperature(logits, targets, self._multilabel)

    def _scaled_logits(self, X):
        """float64 logits over ``temperature_`` (1.0 for models saved before it)."""
        return self._outputs(X).double() / getattr(self, "temperature_", 1.0)

    def _net_spec(self):
        if self._multilabel:
            loss = WeightedLoss("binary_cross_entropy")
            return FineTuneMultiOutputNet, loss, {"predict_nonlinearity": sigmoid}
        extra = {
            "predict_nonlinearity": softmax,
            "classes": list(range(len(self.classes_))),
        }
        return FineTuneNet, WeightedLoss("cross_entropy", self.label_smoothing), extra

    # --------------------------------------------------------------- predicting
    def decision_function(self, X):
        """Logits of the fine-tuned network.

        Parameters
        ----------
        X : images
            As for :meth:`fit`.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two
            single-label classes (logit of ``classes_[1]`` minus logit of
            ``classes_[0]``); (n_samples, n_labels) for multi-label targets.
        """
        # float64 from here on: the difference and the softmax are then both
        # monotonic in the exact logit gap, so they rank images identically.
        logits = self._outputs(X).double().numpy()
        if logits.shape[1] == 2 and not self._multilabel:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities: the softmax of the logits (divided by
        ``temperature_``), or for multi-label targets each label's sigmoid.

        Parameters
        ----------
        X : images
            As for :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes) or (n_samples, n_labels)
        """
        logits = self._scaled_logits(X)
        if self._multilabel:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, dim=1).numpy()

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`.

        Parameters
        ----------
        X : images
            As for :meth:`fit`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes) or (n_samples, n_labels)
        """
        logits = self._scaled_logits(X)
        if self._multilabel:
            return torch.nn.functional.logsigmoid(logits).numpy()
        return torch.log_softmax(logits, dim=1).numpy()

    def predict(self, X):
        """Predicted labels (same type as the ``y`` given to ``fit``), or the
        0/1 indicator matrix (a label's probability above 0.5) for multi-label
        targets.

        Parameters
        ----------
        X : images
            As for :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_labels)
        """
        check_is_fitted(self, "net_")  # before classes_ is read
        logits = self._outputs(X)
        if self._multilabel:
            return (logits > 0).numpy().astype(np.int64)
        return self.classes_[logits.argmax(1).numpy()]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.classifier_tags.multi_label = True
        # Feature rows read as 1 x d "images" (input_shape set) are not what a
        # CNN is for: sklearn's accuracy thresholds on blobs do not apply.
        tags.classifier_tags.poor_score = self.input_shape is not None
        return tags
