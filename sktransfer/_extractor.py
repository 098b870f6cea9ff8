"""CNNFeatureExtractor: pretrained backbones to CNN codes, as an sklearn transformer."""

from __future__ import annotations

import copy
import os
import uuid

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._backbones import _cache_key, find_head, load_backbone, model_display_name
from ._base import _ImageEstimatorMixin
from ._cache import CodeCache, image_digests, resolve_cache_dir, state_digest
from ._doclink import DocLinkMixin
from ._engine import build_engine, shared_engine
from ._engine import forward_halving as _forward_halving
from ._images import Preprocessor, iter_batches
from ._runtime import process_cache, resolve_policy
from ._vit import has_class_token, prefix_tokens, token_prefix

__all__ = ["CNNFeatureExtractor"]

POOLINGS = ("avg", "max", "avgmax", "cls")
# Images hashed / looked up / stored per cache round trip: bounds memory when a
# large collection streams through the cache.
_CACHE_CHUNK = 4096


def pool_features(out, pooling, prefix=0):
    """Reduce one layer's activation to (b, d) float32.

    Maps ``(b, c, h, w)`` are reduced over their positions; token sequences
    ``(b, n, d)`` of a transformer over their tokens, the ``prefix`` tokens
    (class, register, distillation) excluded, or, with ``pooling="cls"``, to
    their first (class) token. ``None`` flattens the whole map or token grid,
    prefix tokens included.
    """
    out = out.float()
    if out.ndim == 2:
        return out
    if out.ndim == 4:
        dims = (2, 3)
    elif out.ndim == 3:  # tokens (b, n, d), e.g. transformer blocks
        dims = (1,)
        if pooling == "cls":
            return out[:, 0]
        if pooling is not None:
            out = out[:, prefix:]
    else:
        return out.flatten(1)
    if pooling is None:
        return out.flatten(1)
    if pooling == "avg":
        return out.mean(dims)
    if pooling == "max":
        return out.amax(dims)
    return torch.cat([out.mean(dims), out.amax(dims)], 1)


class _StopForward(Exception):
    """Raised by a hook once every requested activation is captured."""


class _Outputs(nn.Module):
    """The requested activations of ``net``, pooled and joined: one (b, d) tensor.

    Forward hooks capture the layers (a forward pre-hook on the head for the
    penultimate features, ``None``). Run eagerly, the forward pass stops as soon
    as the deepest requested layer is done; under ``torch.export`` it runs to the
    end and the exporter drops what no output needs. Pooling is part of the
    module, so an exported graph returns the finished codes.
    """

    def __init__(self, net, layers, pooling):
        super().__init__()
        self.net = net
        self.layers = list(layers)
        self.pooling = pooling
        self.targets = [find_head(net) if n is None else n for n in self.layers]
        # prefix tokens (class, registers) of each layer's token outputs
        self.prefix = [token_prefix(net, n) for n in self.layers]

    def activations(self, x):
        """The raw activations, one per requested layer, in order."""
        captured = {}
        want = {t for t in self.targets if t is not None}
        stop = not torch.compiler.is_exporting()

        def make_hook(name, pre):
            def hook(module, args, output=None):
                captured[name] = args[0] if pre else output
                if stop and want.issubset(captured):
                    raise _StopForward

            return hook

        handles = []
        try:
            for name, target in zip(self.layers, self.targets, strict=True):
                if target is None:
                    continue
                module = self.net.get_submodule(target)
                if name is None:
                    handles.append(
                        module.register_forward_pre_hook(make_hook(target, True))
                    )
                else:
                    handles.append(
                        module.register_forward_hook(make_hook(target, False))
                    )
            try:
                full = self.net(x)
            except _StopForward:
                full = None
        finally:
            for h in handles:
                h.remove()
        return [full if t is None else captured[t] for t in self.targets]

    def pool(self, outs):
        """The pooled activations ``outs`` (of :meth:`activations`), one per layer."""
        return [
            pool_features(o, self.pooling, p)
            for o, p in zip(outs, self.prefix, strict=True)
        ]

    def check_pooling(self, outs):
        """A ValueError when ``pooling="cls"`` has no class token to take."""
        if self.pooling != "cls":
            return
        what = type(self.net).__name__
        if not has_class_token(self.net):
            n = prefix_tokens(self.net)
            why = (
                f"its {n} prefix token(s) are register tokens"
                if n
                else ("'cls' is for transformers with one: ViT, DeiT, DINOv2")
            )
            raise ValueError(
                f"pooling='cls' takes the class token, but this {what} has none "
                f"({why}). Use pooling='avg', 'max' or 'avgmax'."
            )
        for name, out, p in zip(self.layers, outs, self.prefix, strict=True):
            if name is not None and (out.ndim != 3 or not p):
                kind = "the patch tokens alone" if out.ndim == 3 else "no tokens"
                raise ValueError(
                    f"pooling='cls' takes the class token, but layer {name!r} "
                    f"outputs {kind} (shape {tuple(out.shape)}). Pick a "
                    f"transformer block (e.g. 'blocks.0') or the final 'norm', or "
                    f"use pooling='avg'."
                )

    def forward(self, x):
        feats = self.pool(self.activations(x))
        return torch.cat(feats, 1) if len(feats) > 1 else feats[0]


class CNNFeatureExtractor(
    DocLinkMixin, _ImageEstimatorMixin, TransformerMixin, BaseEstimator
):
    """Turn images into CNN codes with a pretrained backbone.

    The transformer of the "CNN codes" recipe: drop the final classifier of a network
    pretrained on ImageNet and use its activations as features for a linear SVM,
    logistic regression or a Bayes classifier. Any layer, any pooling, several
    layers from one forward pass; preprocessing comes from the weights.

    Parameters
    ----------
    model : str or torch.nn.Module, default="efficientnet_lite0"
        The backbone: ``"efficientnet_lite0"`` (ImageNet weights shipped with the
        package's dependencies, works offline), a torchvision name
        (``"resnet18"``...), a timm name prefixed with ``"timm/"``, or a module.
    weights : str, path, enum or None, default="imagenet"
        ``"imagenet"`` / ``"DEFAULT"``, a torchvision weights enum (or its name), a
        local state-dict file (``weights_only=True`` or safetensors), or ``None``
        for random initialization. See :func:`sktransfer.load_backbone`.
    layer : str, list of str or None, default=None
        ``None``: the penultimate activations (the input of the final classifier,
        e.g. 1280-d for EfficientNet-Lite0, 4096-d for VGG). Otherwise any module
        name of the backbone's ``named_modules()`` (see
        :func:`sktransfer.list_layers`), e.g. ``"layer3"`` for a ResNet,
        ``"blocks.4"`` for EfficientNet, ``"classifier"`` for the ImageNet logits.
        A list concatenates several layers computed in one forward pass.
    pooling : {"avg", "max", "avgmax", "cls"} or None, default="avg"
        How spatial maps of named layers are reduced: global average, global max,
        both concatenated, or ``None`` to flatten the whole map. The penultimate
        features (``layer=None``) are already pooled by the network itself (for
        a ViT: the normed class token or pooled tokens, as timm's
        ``forward_head(pre_logits=True)``). Token outputs of a transformer
        (``"blocks.N"``, ``"norm"`` of a ViT / DeiT / DINOv2) are pooled over
        the patch tokens, the prefix tokens (class, register, distillation:
        timm's ``num_prefix_tokens``) left out; ``"cls"`` takes the class token
        (networks with one only); ``None`` flattens the whole token grid,
        prefix tokens included.
    input_size : int or (int, int), default=None
        Size images are resized to; ``None`` uses the weights' own size (224 for
        ImageNet weights). Smaller sizes are faster.
    mean, std : sequence of float, default=None
        Override the weights' normalization (rarely right: the default comes from
        the weights).
    batch_size : int, default=32
        Images per forward pass; memory is bounded by it.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        ``"auto"`` uses CUDA when available.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``"auto"`` never changes results materially: fp32 on every CPU, bf16
        autocast (fp16 where bf16 is unsupported) on CUDA. ``"bf16"`` is an
        explicit trade of accuracy for speed, run by the torch engine with
        autocast and channels_last: on a CPU with AVX-512 bf16 (2-core AMD EPYC)
        EfficientNet-Lite0 codes moved by 8-11% (relative L2, up to 0.66
        absolute) and a LogisticRegression on them lost 0.9 accuracy points on
        Fashion-MNIST (0.782 vs 0.791), and it was slower than the default
        fp32 engine there (:ref:`performance`); on CPUs without AMX / AVX-512
        bf16 it is emulated and about 10x slower (a warning says so).
        ``"fp16"`` needs CUDA. Codes are always returned as float32.
    engine : {"auto", "onnxruntime", "torch"}, default="auto"
        What runs the network. ``"onnxruntime"``: a graph exported from the
        network for exactly the requested outputs (pooling included), run by
        ONNX Runtime; fp32 and CPU only. The first use exports it (seconds) and
        checks it against the network; it is then kept on disk, keyed by the
        weights' digest, layers, pooling and input size (under
        ``$SKTRANSFER_CACHE_DIR/onnx``, default ``~/.cache/sktransfer/onnx``),
        so later runs and other processes load it. ``"torch"``: the eager
        network (channels_last, ``inference_mode``; autocast and pinned memory
        on CUDA). ``"auto"``: ONNX Runtime on the CPU in fp32 (codes equal to
        the eager network's up to float rounding; its speed is measured on
        :ref:`performance`), torch on CUDA or with ``precision="bf16"``. When
        ONNX Runtime cannot be used (not installed, export failure, a graph
        that disagrees with the network) the torch engine runs instead and a
        warning says why.
    normalize : bool, default=False
        L2-normalize each code (useful for cosine / prototype heads).
    num_workers : int or "auto", default="auto"
        DataLoader worker processes decoding image files / PIL images.
        ``"auto"``: one per core beyond the first (at most 4) for 32 or more
        files / PIL images when more than one core is available, else none;
        arrays are always converted in this process.
    resize : {"squash", "crop"}, default="squash"
        ``"squash"``: resize to ``input_size`` ignoring the aspect ratio.
        ``"crop"``: resize the shorter side to ``input_size / crop_pct`` (the
        weights' own, e.g. 256 for 224), then keep the centre ``input_size``,
        as torchvision's ``weights.transforms()`` do. See :ref:`inputs`.
    input_shape : tuple of int, default=None
        Shape of one image when ``X`` is a 2-D array of flattened images, e.g.
        ``(8, 8)`` for ``load_digits().data``; ``-1`` infers one axis. Such
        ``X`` is validated like any scikit-learn feature matrix.
    pixel_range : {"auto"} or None, default="auto"
        ``"auto"``: the dtype decides: uint8 is divided by 255, uint16 by 65535,
        other integers must lie in 0-255 and floats in [0, 1]; other values are
        an error, never silently rescaled.
        ``None``: array values are used as they are (already scaled or
        standardized data); the weights' mean / std are applied either way.
    cache : None, str, path or joblib.Memory, default=None
        Directory (or a ``joblib.Memory``, whose ``location`` is used) where codes
        are kept per image: the key is a digest of the image's content (pixels, or
        a file's bytes) and of everything that changes a code (the backbone's
        architecture and weights, layers, pooling, preprocessing, precision). A
        ``GridSearchCV`` over heads, its folds and later runs then run each image
        through the network once. Shards are published atomically, so processes
        may share one directory. ``normalize`` is applied after the cache, so both
        settings share entries. See :ref:`scaling`.
    verbose : int, default=0
        Show a progress bar (images processed) when > 0.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The network, in eval mode (not pickled when it can be rebuilt from
        ``model`` and ``weights``).
    preprocessing_ : Preprocessing
        Input size, mean, std and interpolation in use.
    layers_ : list
        Resolved layer names (``None`` stands for the penultimate features).
    n_features_out_ : int
        Length of one code.
    n_features_in_ : int
        Only set when ``input_shape`` is given (flattened array input).

    See Also
    --------
    FineTunedClassifier : fine-tune the backbone instead of freezing it.
    PrototypeClassifier : a few-shot head for these codes.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer import CNNFeatureExtractor
    >>> from sktransfer.datasets import load_fashion_mnist_sample
    >>> X, y = load_fashion_mnist_sample(return_X_y=True)
    >>> pipe = make_pipeline(CNNFeatureExtractor(input_size=64),
    ...                      LogisticRegression(max_iter=1000))
    >>> pipe.fit(X[:200], y[:200]).score(X[-100:], y[-100:]) > 0.5
    True
    """

    _parameter_constraints = {
        **_ImageEstimatorMixin._parameter_constraints,
        "layer": [str, list, tuple, None],
        "pooling": [StrOptions(set(POOLINGS)), None],
        "mean": ["array-like", None],
        "std": ["array-like", None],
        "normalize": ["boolean"],
        "cache": [None, str, os.PathLike, HasMethods(["cache"])],
    }

    def __init__(
        self,
        *,
        model="efficientnet_lite0",
        weights="imagenet",
        layer=None,
        pooling="avg",
        input_size=None,
        mean=None,
        std=None,
        batch_size=32,
        device="auto",
        precision="auto",
        engine="auto",
        normalize=False,
        num_workers="auto",
        resize="squash",
        input_shape=None,
        pixel_range="auto",
        cache=None,
        verbose=0,
    ):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.input_size = input_size
        self.mean = mean
        self.std = std
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.engine = engine
        self.normalize = normalize
        self.num_workers = num_workers
        self.resize = resize
        self.input_shape = input_shape
        self.pixel_range = pixel_range
        self.cache = cache
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the backbone and resolve layers; no training happens.

        Parameters
        ----------
        X : images
            Validated only (shape, channels, value range, files exist).
        y : ignored

        Returns
        -------
        self : CNNFeatureExtractor
        """
        self._reset()
        self._check_X(X, reset=True)
        self._run_on()  # bad device / precision / engine: an error now
        resolve_cache_dir(self.cache)  # type check now, not mid-transform
        net, prep = load_backbone(self.model, self.weights)
        self.preprocessing_ = prep.override(
            input_size=self.input_size, mean=self.mean, std=self.std, resize=self.resize
        )
        self.layers_ = _resolve_layers(net, self.layer)
        self.backbone_ = net
        outputs = _Outputs(net, self.layers_, self.pooling)
        outs = self._probe(
            outputs.activations,
            self.preprocessing_,
            detail=f" at layer(s) {self.layer!r}",
        )
        outputs.check_pooling(outs)
        self._layer_sizes = [o.shape[1] for o in outputs.pool(outs)]
        self._token_prefix = outputs.prefix
        self.n_features_out_ = int(sum(self._layer_sizes))
        if isinstance(self.model, str):
            # Rebuilt from the spec after unpickling: checked against this then.
            key = _cache_key(self.model, self.weights)
            self._weights_digest = _memo_digest(key, net)
        return self

    def _run_on(self):
        """The :class:`~sktransfer._runtime.RuntimePolicy` on this machine.

        Not pickled. Changing ``device``, ``precision`` or ``engine`` after
        ``fit`` takes effect: the engine and cache spec built for the old
        values are dropped.
        """
        derived = self._derived()
        params = (str(self.device), self.precision, self.engine)
        memo = derived.get("run_on")
        if memo is None or memo[0] != params:
            policy = resolve_policy(self.device, self.precision, self.engine)
            memo = derived["run_on"] = (params, policy)
            derived.pop("engine", None)
            derived.pop("cache_spec", None)
        return memo[1]

    def _net(self):
        """The backbone; after unpickling, rebuilt from the spec and checked."""
        if getattr(self, "backbone_", None) is None:
            net, _ = load_backbone(self.model, self.weights)
            recorded = getattr(self, "_weights_digest", None)
            found = _memo_digest(_cache_key(self.model, self.weights), net)
            if recorded is not None and found != recorded:
                raise RuntimeError(
                    f"the weights rebuilt from model={self.model!r}, "
                    f"weights={self.weights!r} are not those this "
                    f"{type(self).__name__} was fitted with (digest {found} != "
                    f"{recorded}): a torchvision / timm upgrade or a changed "
                    f"weights file would silently change the codes under any "
                    f"head fitted on them. Refit the pipeline, or point "
                    f"weights= at the original weights file."
                )
            self.backbone_ = net
            self._weights_digest = found
        return self.backbone_

    def _digest(self):
        """Digest of the backbone's weights (memoized per spec in the process).

        Recorded at ``fit`` for named backbones (checked after unpickling);
        derived on demand for a user's module, whose weights travel with it.
        """
        recorded = getattr(self, "_weights_digest", None)
        if recorded is not None:
            return recorded
        derived = self._derived()
        if "digest" not in derived:
            key = _cache_key(self.model, self.weights)
            derived["digest"] = _memo_digest(key, self._net())
        return derived["digest"]

    def _get_engine(self):
        policy = self._run_on()
        derived = self._derived()
        if derived.get("engine") is None:
            net = self._net()
            p = self.preprocessing_
            size = tuple(p.input_size)

            def build():
                return build_engine(
                    _Outputs(net, self.layers_, self.pooling),
                    policy=policy,
                    input_shape=(p.in_chans, *size),
                    digest=self._digest,
                    what=f"codes of layers {self.layers_}, pooling {self.pooling}"
                    f"{self._prefix_note()}",
                )

            key = _cache_key(self.model, self.weights)
            if key is None:  # a user's module: its own engine
                derived["engine"] = build()
            else:  # pretrained (never modified) specs share engines
                full_key = (key, tuple(self.layers_), self.pooling, policy)
                full_key += (size, p.in_chans)
                derived["engine"] = shared_engine(full_key, build)
        return derived["engine"]

    # --------------------------------------------------------------- transforming
    def transform(self, X):
        """Compute the CNN codes of ``X``.

        Parameters
        ----------
        X : images
            ndarray ``(n, h, w)``, ``(n, h, w, c)`` or ``(n, c, h, w)`` (uint8 0-255
            or float 0-1; c in {1, 3, 4}), a list of PIL images of any mode, a list
            of arrays of different sizes, or a list of image file paths (decoded
            lazily, batch by batch). Grayscale becomes RGB, alpha is dropped.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_features_out), dtype float32
        """
        check_is_fitted(self, "n_features_out_")
        images = self._check_X(X)
        out = np.empty((len(images), self.n_features_out_), dtype=np.float32)
        for start, codes in self._iter_codes(images):
            out[start : start + len(codes)] = codes
        return out

    def transform_to_file(self, X, filename):
        """Write the CNN codes of ``X`` to a ``.npy`` file as they are produced.

        For collections whose codes do not fit in memory: each batch is appended
        to the file as soon as it is computed, so memory stays bounded by the
        batch (and the DataLoader's prefetch), not by the number of images. The
        file is written under a temporary name and renamed when complete, so a
        crashed run never leaves a truncated file behind.

        Parameters
        ----------
        X : images
            As for :meth:`transform`; typically a list of file paths.
        filename : str or path
            Destination ``.npy`` file (overwritten).

        Returns
        -------
        codes : numpy.memmap of shape (n_samples, n_features_out), dtype float32
            The file, memory-mapped read-only (``np.load(filename,
            mmap_mode="r")``).
        """
        check_is_fitted(self, "n_features_out_")
        images = self._check_X(X)
        filename = os.fspath(filename)
        shape = (len(images), self.n_features_out_)
        tmp = f"{filename}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.lib.format.write_array_header_2_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": shape}
                )
                for _, codes in self._iter_codes(images):
                    f.write(np.ascontiguousarray(codes, dtype="<f4").tobytes())
            os.replace(tmp, filename)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return np.load(filename, mmap_mode="r")

    def _iter_codes(self, images):
        """Yield ``(start, codes)`` blocks in order, from the cache or the network."""
        pre = Preprocessor(self.preprocessing_)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(images), desc="CNN codes", unit="img")

        def forward(indices=None):
            batches = iter_batches(
                images,
                pre,
                self.batch_size,
                num_workers=self.num_workers,
                indices=indices,
            )
            engine = self._get_engine()  # not built when the cache has every code
            for batch in batches:
                codes = _forward_halving(engine, batch).numpy()
                if bar is not None:
                    bar.update(len(codes))
                yield codes

        def finish(codes):
            if self.normalize:
                codes = codes / np.maximum(
                    np.linalg.norm(codes, axis=1, keepdims=True), 1e-12
                )
            return codes

        try:
            cache = self._code_cache()
            if cache is None:
                start = 0
                for codes in forward():
                    yield start, finish(codes)
                    start += len(codes)
                return
            n = len(images)
            for lo in range(0, n, _CACHE_CHUNK):
                idx = np.arange(lo, min(lo + _CACHE_CHUNK, n))
                keys = image_digests(images.subset(idx))
                buf = np.empty((len(idx), self.n_features_out_), dtype=np.float32)
                missing = cache.lookup(keys, buf)
                if bar is not None:
                    bar.update(len(idx) - len(missing))
                if len(missing):
                    got = np.concatenate(list(forward(idx[missing])))
                    buf[missing] = got
                    cache.store(keys[missing], got)
                yield lo, finish(buf)
        finally:
            if bar is not None:
                bar.close()

    def _code_cache(self):
        root = resolve_cache_dir(self.cache)
        if root is None:
            return None
        autocast = self._run_on().autocast
        derived = self._derived()
        if derived.get("cache_spec") is None:
            p = self.preprocessing_
            derived["cache_spec"] = (
                f"sktransfer-codes v1; backbone {model_display_name(self.model)} "
                f"{self._digest()}; layers {self.layers_}; pooling {self.pooling}; "
                f"input_size {tuple(p.input_size)}; mean {tuple(p.mean)}; "
                f"std {tuple(p.std)}; interpolation {p.interpolation}; "
                f"resize {p.resize} {p.crop_pct}; decode v2; "
                f"in_chans {p.in_chans}; autocast {autocast}; "
                f"width {self.n_features_out_}{self._prefix_note()}"
            )
        return CodeCache(root, derived["cache_spec"], self.n_features_out_)

    def _prefix_note(self):
        """For keys: the prefix tokens that token pooling leaves out ("" if none,
        so that the keys of networks without them are what they were)."""
        prefix = getattr(self, "_token_prefix", None) or []
        return f"; prefix tokens {prefix} excluded" if any(prefix) else ""

    def get_feature_names_out(self, input_features=None):
        """Names like ``efficientnet_lite0.avgpool_0`` or ``resnet18.layer3.avg_5``.

        Parameters
        ----------
        input_features : ignored
            Accepted for scikit-learn's transformer interface; the names come
            from the network's layers.

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self, "n_features_out_")
        prefix = model_display_name(self.model)
        names = []
        for layer, width in zip(self.layers_, self._layer_sizes, strict=False):
            part = "avgpool" if layer is None else f"{layer}.{self.pooling or 'flat'}"
            names.extend(f"{prefix}.{part}_{i}" for i in range(width))
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # codes are float32
        tags.requires_fit = True
        return tags

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never strip the live object
        # (engines and the device choice live in _derived(), which pickles empty)
        if isinstance(self.model, str) and "backbone_" in state:
            # Pretrained weights are rebuilt from the spec on load, and checked
            # against the digest recorded at fit (see ``_net``).
            state["backbone_"] = None
        elif state.get("backbone_") is not None:
            state["backbone_"] = copy.deepcopy(state["backbone_"]).cpu()
        return state


# backbone spec (_cache_key) -> digest of its weights, so folds hash a net once
_STATE_DIGESTS = process_cache("state_digests")


def _memo_digest(key, net):
    """``state_digest(net)``, memoized per backbone spec (None: not memoized)."""
    digest = _STATE_DIGESTS.get(key) if key is not None else None
    if digest is None:
        digest = state_digest(net)
        if key is not None:
            _STATE_DIGESTS[key] = digest
    return digest


def _resolve_layers(net, layer):
    if layer is None:
        return [None]
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names:
        raise ValueError("layer is an empty list; name at least one layer or use None.")
    valid = dict(net.named_modules())
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be str, got {name!r}.")
        if name not in valid or not name:
            coarse = [n for n in valid if n and n.count(".") <= 1]
            raise ValueError(
                f"unknown layer {name!r}. Valid choices include {coarse[:60]}"
                f"{' ...' if len(coarse) > 60 else ''}; "
                f"sktransfer.list_layers(model) lists all {len(valid) - 1}."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"layer lists a name twice: {names}.")
    return names
