"""CNNFeatureExtractor: pretrained backbones to CNN codes, as an sklearn transformer."""

from __future__ import annotations

import copy
import os
import threading
import uuid
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._backbones import (
    _cache_key,
    find_head,
    load_backbone,
    model_display_name,
    quiet_torch_warnings,
    strip_head,
)
from ._cache import CodeCache, image_digests, resolve_cache_dir, state_digest
from ._doclink import DocLinkMixin
from ._images import Preprocessor, check_images, iter_batches
from ._runtime import process_cache, resolve_device, resolve_precision

__all__ = ["CNNFeatureExtractor"]

POOLINGS = ("avg", "max", "avgmax")
# Images hashed / looked up / stored per cache round trip: bounds memory when a
# large collection streams through the cache.
_CACHE_CHUNK = 4096


def pool_features(out, pooling):
    """Reduce one layer's activation to (b, d) float32."""
    out = out.float()
    if out.ndim == 2:
        return out
    if out.ndim == 4:
        dims = (2, 3)
    elif out.ndim == 3:  # tokens (b, n, d), e.g. transformer blocks
        dims = (1,)
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


class _Engine:
    """Runs a backbone and returns the requested activations, pooled and joined.

    Two ways to run: a traced, frozen TorchScript graph optimized for CPU inference
    (conv + BatchNorm folded, oneDNN layouts; about 2.5x faster for EfficientNets on
    CPUs without AMX), or the eager module with forward hooks (the fallback for
    networks that do not trace, for autocast and for CUDA). Traced graphs are
    checked against the eager network once before they are used.
    """

    def __init__(self, net, layers, pooling, device, autocast, optimize, input_size):
        self.net = net
        self.layers = layers
        self.pooling = pooling
        self.device = device
        self.autocast = autocast
        self.channels_last = autocast is not None
        self.traced = None
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net.to(device)
        if optimize and device.type == "cpu" and autocast is None:
            self.traced = _traced(net, layers, input_size, self._eager)

    def _eager(self, x):
        captured = {}
        handles = []
        targets = [
            find_head(self.net) if name is None else name for name in self.layers
        ]
        want = {t for t in targets if t is not None}

        def make_hook(name, pre):
            def hook(module, args, output=None):
                captured[name] = args[0] if pre else output
                if want.issubset(captured):
                    raise _StopForward

            return hook

        try:
            for name, target in zip(self.layers, targets, strict=False):
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
        return [full if t is None else captured[t] for t in targets]

    def __call__(self, x):
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.traced is not None:
                outs = self.traced(x)
                outs = [outs] if isinstance(outs, torch.Tensor) else list(outs.values())
            elif self.autocast is not None:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    outs = self._eager(x)
            else:
                outs = self._eager(x)
            feats = [pool_features(o, self.pooling) for o in outs]
            return torch.cat(feats, 1).cpu() if len(feats) > 1 else feats[0].cpu()


_TRACED = {}
_TRACED_LOCK = threading.Lock()


def _traced(net, layers, input_size, eager):
    """Trace + freeze + optimize ``net`` for the requested layers; None on failure."""
    probe = torch.rand(2, 3, *input_size)
    probe = (probe - 0.5) / 0.5
    try:
        with quiet_torch_warnings(), torch.no_grad():
            if layers == [None]:
                body = copy.deepcopy(net)
                strip_head(body)
                graph = body
            else:
                from torchvision.models.feature_extraction import (
                    create_feature_extractor,
                )

                # on a copy: its train-mode trace bumps BatchNorm's
                # num_batches_tracked in the module it is given
                graph = create_feature_extractor(
                    copy.deepcopy(net), return_nodes={name: name for name in layers}
                )
            first_conv = next(
                (m for m in graph.modules() if isinstance(m, nn.Conv2d)), None
            )
            if first_conv is not None:
                probe = probe[:, : first_conv.in_channels]
            traced = torch.jit.trace(graph.eval(), probe, strict=False)
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            got = traced(probe)
            got = [got] if isinstance(got, torch.Tensor) else list(got.values())
            want = eager(probe)
            for a, b in zip(got, want, strict=False):
                # oneDNN reorders sums: allow float32 noise relative to the scale
                scale = max(1.0, float(b.float().abs().max()))
                if a.shape != b.shape or not torch.allclose(
                    a.float(), b.float(), rtol=1e-3, atol=1e-4 * scale
                ):
                    return None
        return traced
    except Exception:  # noqa: BLE001 - any tracing failure means "use eager"
        return None


class CNNFeatureExtractor(DocLinkMixin, TransformerMixin, BaseEstimator):
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
    pooling : {"avg", "max", "avgmax"} or None, default="avg"
        How spatial maps of named layers are reduced: global average, global max,
        both concatenated, or ``None`` to flatten the whole map. The penultimate
        features (``layer=None``) are already pooled by the network itself.
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
        ``"auto"``: bf16 autocast + channels_last on CPUs with AMX / AVX-512 bf16,
        autocast on CUDA, otherwise fp32 with a traced and frozen graph. Codes are
        always returned as float32.
    optimize : bool, default=True
        On CPU in fp32, trace and freeze the network (BatchNorm folded into
        convolutions) for faster inference; falls back to the eager network when
        tracing fails or disagrees with it.
    normalize : bool, default=False
        L2-normalize each code (useful for cosine / prototype heads).
    num_workers : int, default=0
        DataLoader worker processes decoding image files / PIL images.
    input_shape : tuple of int, default=None
        Shape of one image when ``X`` is a 2-D array of flattened images, e.g.
        ``(8, 8)`` for ``load_digits().data``; ``-1`` infers one axis. Such
        ``X`` is validated like any scikit-learn feature matrix.
    pixel_range : {"auto"} or None, default="auto"
        ``"auto"``: uint8 is divided by 255, uint16 by 65535, floats must lie in
        [0, 1] (or [0, 255]); other values are an error, never silently rescaled.
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
        "model": [str, nn.Module],
        "weights": "no_validation",
        "layer": [str, list, tuple, None],
        "pooling": [StrOptions(set(POOLINGS)), None],
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "mean": ["array-like", None],
        "std": ["array-like", None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "optimize": ["boolean"],
        "normalize": ["boolean"],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "input_shape": [tuple, list, None],
        "pixel_range": [StrOptions({"auto"}), None],
        "cache": [None, str, os.PathLike, HasMethods(["cache"])],
        "verbose": ["verbose"],
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
        optimize=True,
        normalize=False,
        num_workers=0,
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
        self.optimize = optimize
        self.normalize = normalize
        self.num_workers = num_workers
        self.input_shape = input_shape
        self.pixel_range = pixel_range
        self.cache = cache
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def _check_X(self, X, reset=False):
        if self.input_shape is not None and _is_feature_matrix(X):
            # Flattened images: validated like any sklearn feature matrix.
            X = validate_data(self, X, reset=reset, dtype="numeric")
        return check_images(
            X, input_shape=self.input_shape, pixel_range=self.pixel_range
        )

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
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_
        self._check_X(X, reset=True)
        net, prep = load_backbone(self.model, self.weights)
        self.preprocessing_ = prep.override(
            input_size=self.input_size, mean=self.mean, std=self.std
        )
        self.layers_ = _resolve_layers(net, self.layer)
        self.backbone_ = net
        self._engine = None
        probe = torch.zeros(
            1, self.preprocessing_.in_chans, *self.preprocessing_.input_size
        )
        self._cache_spec = None
        resolve_cache_dir(self.cache)  # type check now, not mid-transform
        try:
            out = self._get_engine()(probe)
        except RuntimeError as exc:
            raise ValueError(
                f"the backbone cannot run on {self.preprocessing_.input_size} inputs "
                f"at layer(s) {self.layer!r} ({str(exc).splitlines()[0][:200]}). Use "
                f"a larger input_size."
            ) from None
        self.n_features_out_ = int(out.shape[1])
        self._layer_sizes = self._layer_widths()
        return self

    def _layer_widths(self):
        if len(self.layers_) == 1:
            return [self.n_features_out_]
        probe = torch.zeros(
            1, self.preprocessing_.in_chans, *self.preprocessing_.input_size
        )
        engine = self._get_engine()
        with torch.inference_mode():
            outs = engine._eager(probe.to(engine.device))
        return [pool_features(o, self.pooling).shape[1] for o in outs]

    def _get_engine(self):
        if getattr(self, "_engine", None) is None:
            if getattr(self, "backbone_", None) is None:  # after unpickling
                self.backbone_, _ = load_backbone(self.model, self.weights)
            device = resolve_device(self.device)
            autocast = resolve_precision(self.precision, device)
            self._engine = _cached_engine(
                self.backbone_,
                self.layers_,
                self.pooling,
                device,
                autocast,
                self.optimize,
                self.preprocessing_.input_size,
                key=_cache_key(self.model, self.weights),
            )
        return self._engine

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
        engine = self._get_engine()
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
        if getattr(self, "_cache_spec", None) is None:
            engine = self._get_engine()
            key = _cache_key(self.model, self.weights)
            digest = _STATE_DIGESTS.get(key) if key is not None else None
            if digest is None:
                digest = state_digest(self.backbone_)
                if key is not None:
                    _STATE_DIGESTS[key] = digest
            p = self.preprocessing_
            self._cache_spec = (
                f"sktransfer-codes v1; backbone {model_display_name(self.model)} "
                f"{digest}; layers {self.layers_}; pooling {self.pooling}; "
                f"input_size {tuple(p.input_size)}; mean {tuple(p.mean)}; "
                f"std {tuple(p.std)}; interpolation {p.interpolation}; "
                f"in_chans {p.in_chans}; autocast {engine.autocast}; "
                f"width {self.n_features_out_}"
            )
        return CodeCache(root, self._cache_spec, self.n_features_out_)

    def get_feature_names_out(self, input_features=None):
        """Names like ``efficientnet_lite0.avgpool_0`` or ``resnet18.layer3.avg_5``.

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
        tags.input_tags.two_d_array = self.input_shape is not None
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # codes are float32
        tags.requires_fit = True
        return tags

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never strip the live object
        state.pop("_engine", None)
        if isinstance(self.model, str) and "backbone_" in state:
            # Unchanged pretrained weights are rebuilt from the spec on load.
            state["backbone_"] = None
        elif state.get("backbone_") is not None:
            state["backbone_"] = copy.deepcopy(state["backbone_"]).cpu()
        return state


def _is_feature_matrix(X):
    """True for 2-D / 1-D numeric arrays and sparse matrices (not image lists)."""
    if hasattr(X, "tocsr") or hasattr(X, "to_numpy"):
        return True
    if isinstance(X, (list, tuple)):
        return bool(len(X)) and np.ndim(X[0]) == 1
    return isinstance(X, np.ndarray) and X.ndim <= 2


def _forward_halving(engine, batch):
    """Run a batch; on out-of-memory, split it in halves and retry."""
    try:
        return engine(batch)
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        if len(batch) == 1:
            raise MemoryError(
                "out of memory on a single image; lower input_size or use device='cpu'."
            ) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc) or len(batch) == 1:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(batch) // 2
    return torch.cat(
        [_forward_halving(engine, batch[:half]), _forward_halving(engine, batch[half:])]
    )


_ENGINES = process_cache("engines")
_ENGINES_LOCK = threading.Lock()
# backbone spec (_cache_key) -> digest of its weights, so folds hash a net once
_STATE_DIGESTS = process_cache("state_digests")


def _cached_engine(net, layers, pooling, device, autocast, optimize, size, key):
    """Engines of pretrained (never modified) specs are shared within a process."""
    if key is None:
        return _Engine(net, layers, pooling, device, autocast, optimize, size)
    full_key = (key, tuple(layers), pooling, str(device), autocast, optimize, size)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(full_key)
        if engine is None:
            engine = _Engine(net, layers, pooling, device, autocast, optimize, size)
            if len(_ENGINES) > 16:
                _ENGINES.clear()
            _ENGINES[full_key] = engine
        return engine


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
