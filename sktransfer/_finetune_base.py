"""The fine-tuning core: one base for every fine-tuned estimator.

As scikit-learn's ``BaseMultilayerPerceptron`` carries ``MLPClassifier`` and
``MLPRegressor``, :class:`BaseFineTuned` holds the whole fit -- the plan, the
module, the validation split, the activation cache, the head start, the
trainer, the fitted state -- and prediction (from the activation stores or
through an engine), ``save_backbone`` and the persistence hooks. An estimator
declares only what differs, through these hooks:

``_encode_targets(y)``
    Checks ``y`` and returns the training targets (class indices, or float
    rows) and the number of network outputs; sets the target attributes
    (``classes_``, the target scaling).
``_sample_weights(sample_weight, targets)``
    The per-sample loss weights of the encoded targets (``class_weight``
    folds in here).
``_coverage(targets)``
    A boolean ``(n, m)`` matrix "row i carries class / label j" that the
    validation split must keep in training, or None (regression).
``_net_spec()``
    The skorch net class, the loss and the net's extra arguments.
``_head_inits`` / ``_start_head(head, feats, targets, weight, init)``
    The head inits computed from frozen features, and their computation.
``_resolve_head_init()``
    What ``head_init="auto"`` is, and the checks of head against head init.

Shared parameter documentation lives here once (:data:`PARAM_DOCS`) and is
filled into each estimator's docstring by :func:`fill_param_docs`.
"""

from __future__ import annotations

import os
import re
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._activations import (
    ActivationSet,
    CachedDataset,
    open_session,
    predict_from_stores,
)
from ._augment import make_augmentation
from ._base import _ImageEstimatorMixin
from ._cache import image_digests, resolve_cache_dir, state_digest
from ._doclink import DocLinkMixin
from ._engine import TorchEngine, build_engine, forward_halving
from ._finetune_docs import PARAM_DOCS
from ._fit_callbacks import DrawViews
from ._images import Preprocessor, iter_batches, resolve_num_workers
from ._runtime import dtype_name, keep_freed_memory, resolve_policy
from ._trainer import n_trainable, rebuild_net, train, trim
from ._training import (
    FitPlan,
    ImageDataset,
    OwnedRNG,
    SeededTransform,
    TrainConfig,
    adabn,
    build_module,
    export_state,
    frozen_features,
    make_loader,
    recalibrate_bn,
    resolve_train_layers,
)
from ._tta import apply_view, check_tta, view_transforms


class _FitData(NamedTuple):
    """What ``_prepare_data`` hands to the head start and the trainer."""

    train: torch.utils.data.Dataset  # (augmented) training items
    valid: torch.utils.data.Dataset | None  # early stopping's held-out items
    plain: torch.utils.data.DataLoader  # training items, un-augmented, in order
    train_idx: np.ndarray  # rows of the fit's data that train
    valid_idx: np.ndarray | None  # rows of the fit's data that validate
    draw: DrawViews | None  # picks cached views per epoch
    num_workers: int  # DataLoader workers of the training loader
    acts: ActivationSet | None  # the activation cache, when it is on


# The default policy (augment / augment_views = "auto"); see the estimators'
# docstrings and docs/user_guide/fine_tuning.rst. train_layers="auto" is in
# _training.resolve_train_layers. Translations only: flips were the default
# until the selection on several tasks (benchmarks/defaults_selection.py:
# Fashion-MNIST and digits at 20 per class, 3 samples each) found the default
# without them ahead on both (+2.6 vs +1.3 and +15.6 vs +13.2 points over
# codes + LR, Intel Xeon amx_bf16), and a flip changes what a digit or a
# letter is.
AUTO_AUGMENT = ("translate",)
AUTO_VIEWS = 4


def _precision_policy(config, runtime):
    """How a fit's arithmetic ran, for ``policy_["precision"]``."""
    if config.step_autocast is not None:
        return (
            f"{dtype_name(config.step_autocast)} training steps (depthwise and "
            f"sub-stride convolutions fp32); {dtype_name(config.autocast)} cache "
            f"and predictions (CPU kind {runtime.cpu_kind})"
        )
    return dtype_name(config.autocast)


class BaseFineTuned(DocLinkMixin, _ImageEstimatorMixin, BaseEstimator):
    """Fit machinery shared by :class:`FineTunedClassifier` and
    :class:`FineTunedRegressor` (not an estimator by itself)."""

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
        "layer_decay": [Interval(Real, 0, 1, closed="right"), None],
        "optimizer": [StrOptions({"adamw", "sgd"})],
        "scheduler": [StrOptions({"cosine", "onecycle"}), None],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "l1": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "drop_path": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "augment": [str, list, tuple, callable, None],
        "augment_views": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "tta": [None, StrOptions({"flip"}), Interval(Integral, 1, None, closed="left")],
        "callbacks": [list, None],
        "cache": [str, os.PathLike, "boolean", None],
        "random_state": ["random_state"],
    }

    # Inits computed from frozen features by _start_head (the others are
    # drawn when the head is built).
    _head_inits = ()
    layer_decay = None  # models saved before layer-wise decay existed
    _auto_augment = AUTO_AUGMENT  # what augment="auto" is
    _exact_bn_head_start = False  # see _init_head

    # ---------------------------------------------------------------- fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fine-tune a fresh copy of the pretrained network on ``(X, y)``.

        Parameters
        ----------
        X : images
            An ``(n, h, w)``, ``(n, h, w, c)`` or ``(n, c, h, w)`` array (uint8
            or float in [0, 1]), a list of PIL images or arrays, a list of file
            paths, or a 2-D array of flattened images with ``input_shape``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets (see the estimator's description).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights in the loss.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._reset()
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                f"is None."
            )
        images = self._check_X(X, reset=True)
        targets, n_outputs = self._encode_targets(y, len(images))
        weight = self._sample_weights(sample_weight, targets).astype(np.float32)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        runtime = resolve_policy(self.device, self.precision, self.engine)
        self._fit(images, targets, n_outputs, weight, seed, runtime)
        return self

    def _fit(self, images, y, n_outputs, weight, seed, runtime):
        """The phases of ``fit``: module, plan, data, head, training, fitted state.

        ``runtime`` is the fit's :class:`~sktransfer._runtime.RuntimePolicy`;
        the fit owns its RNG streams (drawn from ``seed``).
        """
        device = runtime.device
        head_init = self._resolve_head_init()
        if device.type == "cpu":
            keep_freed_memory()  # autograd's buffers, reused instead of re-faulted
        rng = OwnedRNG(seed, device)
        gen = torch.Generator().manual_seed(seed)
        built = build_module(self, n_outputs, head_init, gen, probe=self._probe)
        module, self.preprocessing_ = built.module, built.preprocessing
        self._state_keys, self._head_name = built.state_keys, built.head_name
        plan = self._plan(module, built, head_init, images, runtime)
        check_tta(self.tta, plan.augment)  # before the training, not after
        module.to(device)
        config = TrainConfig(
            trainable=plan.trainable,
            lr=self.lr,
            backbone_lr=self._backbone_lr(),
            weight_decay=self.weight_decay,
            l1=self.l1,
            optimizer=self.optimizer,
            freeze_epochs=min(self.freeze_epochs, self.max_epochs),
            layer_decay=self.layer_decay,
        ).with_policy(runtime)
        if config.channels_last:
            # before the activation cache: its prefix runs as the uncached fit's
            module.to(memory_format=torch.channels_last)
        split = self._split(y, seed)
        data, cache_note = self._prepare_data(
            module, images, y, weight, split, config, plan, seed, rng, device
        )
        if data.acts is not None:
            # only the units after the cached prefix run in the steps: the
            # frozen part stays what the cache computed (fp32 on the CPU)
            config = config.with_policy(runtime, cached=True)
        self.policy_ = plan.report(cache_note, _precision_policy(config, runtime))
        self._init_head(module, data, config, device, y, weight, plan.head_init)
        net, best = train(self, module, data, config, seed, rng, device)
        self._calibrate(net, data, y)
        if data.acts is not None:
            self._derived()["stores"] = data.acts.shortcuts()
        self.net_ = trim(net)
        self.n_epochs_ = best.epochs_done_
        self.best_epoch_ = best.best_epoch_
        self.n_trainable_params_ = n_trainable(module, config.trainable)
        if self.verbose:
            print(f"[{type(self).__name__}] policy: {self.policy_}")

    def _calibrate(self, net, data, y):
        """Fit what the trained network's outputs need on the validation split
        (``data.valid``, None without early stopping); the module still takes
        what the training steps took. The classifier's temperature."""

    def _backbone_lr(self):
        """The body's rate: ``backbone_lr``; None is ``lr / 3``, or ``lr`` with
        ``layer_decay`` (the decay itself makes the body's rates smaller)."""
        if self.backbone_lr is not None:
            return self.backbone_lr
        return self.lr if self.layer_decay is not None else self.lr / 3

    def _plan(self, module, built, head_init, images, runtime):
        """The :class:`FitPlan`: every ``"auto"`` resolved, parameters frozen.

        The body's anatomy is the one ``build_module``'s probe read
        (:class:`~sktransfer._backbones.Anatomy`): the default ``train_layers``,
        the stages an int counts and the activation cache's units and
        checkpoint come from it."""
        body = built.anatomy
        train_layers, trainable = resolve_train_layers(
            module, self.train_layers, self.bn, body
        )
        for name, param in module.body.named_parameters():
            param.requires_grad_(name in trainable)
        self._warn_idle_drop_path(built.drop_sites, trainable, train_layers)
        augment = self._auto_augment if self.augment == "auto" else self.augment
        views = AUTO_VIEWS if self.augment_views == "auto" else self.augment_views
        return FitPlan(
            train_layers=train_layers,
            trainable=frozenset(trainable),
            head_init=head_init,
            augment=augment,
            augment_views=int(views),
            cache=self.cache is not False,
            cache_dir=self._cache_dir(),
            runtime=runtime,
            anatomy=body,
        )

    def _warn_idle_drop_path(self, drop_sites, trainable, train_layers):
        dropped = [
            site
            for site in drop_sites
            if any(name.startswith(f"{site}.") for name in trainable)
        ]
        if drop_sites and not dropped:
            warnings.warn(
                f"drop_path={self.drop_path} has no effect: none of the blocks "
                f"that can be skipped ({', '.join(drop_sites[-3:])}, ...) "
                f"is trained with train_layers={train_layers!r}, "
                f"and frozen blocks never drop. Train more layers or use "
                f"drop_path=0.",
                UserWarning,
                stacklevel=6,  # < _plan < _fit < fit < _fit_context < caller
            )

    def _split(self, y, seed):
        """Train / validation indices; every class or label keeps a training row.

        Stratified by class when the targets are classes (a plain random split
        when a class is too small), random otherwise.
        """
        idx = np.arange(len(y))
        if not self.early_stopping:
            return idx, None
        stratify = y if y.ndim == 1 and y.dtype.kind in "iu" else None
        try:
            train, valid = train_test_split(
                idx,
                test_size=self.validation_fraction,
                stratify=stratify,
                random_state=seed,
            )
        except ValueError:  # a class too small to stratify: plain random split
            train, valid = train_test_split(
                idx, test_size=self.validation_fraction, random_state=seed
            )
        # A class or label whose rows all went to validation would never be
        # trained on: give one of them back.
        carries = self._coverage(y)
        if carries is not None:
            lost = np.flatnonzero(~carries[train].any(0) & carries.any(0))
            if len(lost):
                back = np.unique([valid[carries[valid, j]][0] for j in lost])
                train = np.sort(np.concatenate([train, back]))
                valid = np.setdiff1d(valid, back)
                warnings.warn(
                    f"early_stopping: {len(lost)} {self._coverage_name} have too "
                    f"few images to be both trained on and validated (e.g. "
                    f"{self.classes_[lost[:3]]}); they are kept for training "
                    f"only, so the validation score does not cover them. Add "
                    f"images or use early_stopping=False.",
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

    _coverage_name = "class(es)"

    def _coverage(self, y):
        """Row i carries class / label j (boolean (n, m)), or None: no constraint."""
        return None

    def _cache_dir(self):
        if isinstance(self.cache, bool):
            return None
        root = resolve_cache_dir(self.cache)
        return None if root is None else Path(os.path.expanduser(str(root)))

    def _prepare_data(
        self, module, images, y, weight, split, config, plan, seed, rng, device
    ):
        """The training / validation datasets: images, or cached activations.

        With the activation cache, ``module.cut`` is set: the module then takes
        the frozen prefix's outputs until the net is trimmed. Also returns the
        cache's description for ``policy_["cache"]``.
        """
        train_idx, valid_idx = split
        full = ImageDataset(images, Preprocessor(self.preprocessing_), y, weight)
        if self.bn == "adabn":
            adabn(module, make_loader(full.subset(train_idx), self.batch_size), device)
        acts, note = open_session(
            module,
            full,
            image_digests(images),
            config,
            plan,
            seed,
            device,
            batch_size=self.batch_size,
            bn=self.bn,
            who=type(self).__name__ if self.verbose else None,
        )
        draw = None
        if acts is None:
            train = full.subset(train_idx)
            valid = None if valid_idx is None else full.subset(valid_idx)
            plain = train
            transform = make_augmentation(plan.augment, self.preprocessing_.input_size)
            if transform is not None:
                train = train.with_transform(SeededTransform(transform, rng))
            in_memory = full.cache is not None and self.num_workers == "auto"
            workers = 0 if in_memory else resolve_num_workers(self.num_workers, images)
        else:
            module.cut = acts.suffix
            head_rows = acts.body_outputs() if config.freeze_epochs else None
            if head_rows is not None:
                module.phase_cuts = {"head": [], "body": acts.suffix}
                note += "; head-only epochs on stored body outputs"
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
        data = _FitData(
            train=train,
            valid=valid,
            plain=make_loader(plain, self.batch_size),
            train_idx=train_idx,
            valid_idx=valid_idx,
            draw=draw,
            num_workers=workers,
            acts=acts,
        )
        return data, note

    def _init_head(self, module, data, config, device, y, weight, init):
        """A head init of ``_head_inits``: the head from frozen features.

        With ``_exact_bn_head_start``, the trained BatchNorms first get the
        training images' exact statistics (what the model predicts with at the
        end): a linear head on values is not invariant to the shift that
        stale statistics put into the features, as a cosine head on
        directions nearly is.
        """
        if init not in self._head_inits:
            return
        if self._exact_bn_head_start:
            recalibrate_bn(
                module, data.plain, device, module.trained_bns(config.trainable)
            )
        stored = getattr(data.train, "head_rows", None)
        if stored is not None:  # the frozen body's outputs, already stored
            feats = torch.stack([stored.get(i, 0) for i in data.train_idx]).flatten(1)
            targets = torch.as_tensor(y[data.train_idx])
        else:
            feats, targets = frozen_features(module, data.plain, device)
        w_train = None if weight is None else weight[data.train_idx]
        with torch.no_grad():
            self._start_head(module.head, feats, targets, w_train, init)

    @property
    def history_(self):
        """The skorch history of the last fit (``net_.history``)."""
        check_is_fitted(self, "net_")
        return self.net_.history

    # ------------------------------------------------------------- predicting
    def _outputs(self, X):
        """The network's outputs (logits, or standardized values), float32."""
        check_is_fitted(self, "net_")
        images = self._check_X(X, reset=False)
        n_out = self.net_.module_.head.weight.shape[0]
        tta = check_tta(self.tta, self.policy_.get("augment"))
        if tta is not None:
            return self._tta_outputs(images, tta, n_out)
        out = torch.empty(len(images), n_out)
        todo = predict_from_stores(self, images, out)
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
            out[todo] = torch.cat(outs).float()
        return out

    def _tta_outputs(self, images, tta, n_out):
        """The outputs averaged over the test-time views (:mod:`._tta`).

        Every view runs through the whole network (the activation stores hold
        the fit's own views, not these): ``tta`` costs its views' forwards.
        """
        views = view_transforms(
            tta, self.policy_.get("augment"), self.preprocessing_.input_size
        )
        run = self._predict_engine(len(images) * len(views))
        pre = Preprocessor(self.preprocessing_)
        digests = image_digests(images)
        out, start = torch.zeros(len(images), n_out, dtype=torch.float64), 0
        batches = iter_batches(
            images, pre, self.batch_size, num_workers=self.num_workers, normalize=False
        )
        for batch in batches:
            rows = slice(start, start + len(batch))
            for v, transform in enumerate(views):
                view = apply_view(batch, digests[rows], v, transform)
                out[rows] += forward_halving(run, pre.normalize(view)).double()
            start += len(batch)
        return (out / len(views)).float()

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
                what=f"fine-tuned {type(module.head).__name__} outputs",
            )
            settled = True  # ONNX Runtime, or torch after a warned fallback
        elif engine is None:
            engine = TorchEngine(net.module_, runtime)
            settled = runtime.engine == "torch"
        else:
            return engine
        derived.update(engine=engine, settled=settled, engine_param=self.engine)
        return engine

    # ------------------------------------------------------------------ export
    def save_backbone(self, path):
        """Write the fine-tuned network as a state dict of the original architecture.

        ``CNNFeatureExtractor(model=<same model>, weights=path)`` then computes
        fine-tuned CNN codes, and a fine-tuned estimator with ``weights=path``
        starts from them (pretrain on a large dataset, then few-shot on new
        classes). The new head is saved in the place of the old one (the loader
        resizes it).

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

    # ------------------------------------------------------------- persistence
    def _state_out(self, value, where):
        """The fitted network for :func:`sktransfer.save`: ``value(obj, where)``
        turns each tensor / record into the writer's node."""
        net = self.net_
        return {
            "module": {
                k: value(t, f"{where}.net_.module_[{k!r}]")
                for k, t in net.module_.state_dict().items()
            },
            # The TrainConfig's fields (the key predates the dataclass).
            "ft": value(net.config.to_dict(), f"{where}.net_.config"),
            "history": value(list(net.history), f"{where}.net_.history"),
        }

    def _state_in(self, value, node):
        """Rebuild ``net_`` from :meth:`_state_out`'s node (``value`` reads one)."""
        n_out = self._n_outputs()
        spec = type(self)(**{**self.get_params(deep=False), "weights": None})
        init = self.policy_.get("head_init", "zeros")
        built = build_module(spec, n_out, init, None, probe=self._probe)
        module = built.module
        module.load_state_dict({k: value(t) for k, t in node["module"].items()})
        module.eval()
        policy = resolve_policy(self.device, self.precision, self.engine)
        # Files written before freeze_epochs was recorded: the estimator's, capped.
        freeze = min(self.freeze_epochs, self.max_epochs)
        config = TrainConfig.from_dict(value(node["ft"]), freeze_epochs=freeze)
        # Precision and memory format follow the machine the model is loaded on.
        config = config.with_policy(policy)
        self.net_ = rebuild_net(
            self, module, policy.device, config, value(node["history"])
        )


_DOC_FIELD = re.compile(r"^(\s*)\{\{params: ([\w, ]+)\}\}$", re.M)


def fill_param_docs(cls):
    """Class decorator: replace ``{{params: a, b}}`` lines of the docstring by
    :data:`PARAM_DOCS`' entries ``a`` and ``b`` (indented as the line)."""

    def entries(match):
        indent, names = match.group(1), match.group(2).split(",")
        text = "\n".join(PARAM_DOCS[n.strip()].strip("\n") for n in names)
        return "\n".join(indent + line if line else "" for line in text.split("\n"))

    cls.__doc__ = _DOC_FIELD.sub(entries, cls.__doc__)
    return cls
