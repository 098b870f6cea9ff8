"""One ONNX file for a whole fitted model: :func:`export_onnx`.

The file takes what a serving client has after decoding and resizing: uint8 RGB
images ``(batch, height, width, 3)`` at the model's input size. Inside, in
order:

1. **normalization**: the pixels cast to float, divided by 255, minus the mean
   and over the std of the estimator's preprocessing (the operations, in the
   order, of :class:`~sktransfer._images.Preprocessor`);
2. **the networks**: the graph each engine runs (:func:`_engine.export_graph`:
   the on-disk cache's, checked against the network when it was exported),
   one per extractor of a :class:`~sklearn.pipeline.FeatureUnion`;
3. **the head**: scikit-learn steps converted by skl2onnx, a few-shot head
   (:data:`HEADS`), or the outputs of a fine-tuned network (softmax, sigmoid,
   or values on the targets' scale: :data:`_NETWORKS`);
4. **outputs** named by what they are: ``label`` + ``probabilities``,
   ``label`` + ``decision`` (no ``predict_proba``), ``values`` (regressors) or
   ``features`` (a model that ends in a transformer).

The metadata records the input, preprocessing, classes, outputs, library
versions and the check: before the file is written, ONNX Runtime runs it on a
probe batch and its outputs are compared with the estimator's own; a mismatch
is an error.

A new estimator kind is one entry: an image estimator that is one torch
network in :data:`_NETWORKS` (a function returning its network and how the
network's outputs become the file's); a head on features in :data:`HEADS`.
:func:`export_model_file` is what the command line's ``sktransfer export MODEL
OUT.onnx`` calls.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from ._onnx_graph import (
    HEADS,
    Graph,
    convert_sklearn_steps,
    sigmoid_outputs,
    softmax_outputs,
    values_outputs,
)

__all__ = ["export_model_file", "export_onnx"]

FORMAT = "sktransfer-onnx-model 1"
INPUT = "images"
#: Probabilities must match ``predict_proba`` to this, absolutely; values and
#: decision values to this fraction of their largest magnitude on the probe;
#: labels must be equal where the top two scores are further apart than this.
TOLERANCE = 1e-4
PROBE_IMAGES = 8


# ------------------------------------------------------------- the image stage
def _normalized(g, p, name):
    """uint8 NHWC images -> the network's normalized NCHW float input."""
    from ._images import _expand

    c = p.in_chans
    mean = np.asarray(_expand(p.mean, c), np.float32).reshape(1, c, 1, 1)
    std = np.asarray(_expand(p.std, c), np.float32).reshape(1, c, 1, 1)
    x = g.op("Transpose", INPUT, perm=[0, 3, 1, 2], hint=f"{name}/nchw")
    x = g.op("Cast", x, to=TensorProto.FLOAT, hint=f"{name}/float")
    x = g.op("Div", x, g.const("u8_scale", np.float32(255.0)), hint=f"{name}/unit")
    x = g.op("Sub", x, g.const(f"{name}/mean", mean))
    return g.op("Div", x, g.const(f"{name}/std", std), hint=f"{name}/input")


def _on_cpu(module):
    """``module``, or a CPU copy of it when its weights live on another device."""
    if any(t.device.type != "cpu" for t in module.state_dict().values()):
        return copy.deepcopy(module).cpu()
    return module


def _network(g, name, module, p, digest, what, flip=None):
    """Normalization + the engine's graph of ``module``; returns its output.

    ``flip`` (the number of outputs, or None): the ``(n, flip)`` outputs
    averaged over each image and its mirror image (``tta="flip"``), from one
    run of the network on a doubled batch.
    """
    from ._engine import EngineFallback, export_graph

    if p.in_chans != 3:
        raise ValueError(
            f"{name}: the network takes {p.in_chans}-channel images; export_onnx "
            f"writes files that take RGB images only."
        )
    try:
        graph = export_graph(
            _on_cpu(module),
            input_shape=(p.in_chans, *p.input_size),
            digest=digest,
            what=what,
        )
    except EngineFallback as exc:
        raise RuntimeError(f"{name}: cannot export the network ({exc}).") from None
    x = _normalized(g, p, name)
    if flip is not None:
        big = np.iinfo(np.int64).max
        mirror = g.op(
            "Slice",
            x,
            g.const("flip_starts", np.array([-1])),
            g.const("flip_ends", np.array([-big])),
            g.const("flip_axes", np.array([3])),
            g.const("flip_steps", np.array([-1])),
            hint=f"{name}/mirror",
        )
        x = g.op("Concat", x, mirror, axis=0, hint=f"{name}/views")
    y = g.include(graph, name, {"x": x})["y"][0]
    if flip is not None:  # rows 0..n-1 the images, n..2n-1 their mirrors
        halves = g.op("Reshape", y, g.const("two_views", np.array([2, -1, flip])))
        axis = g.const("view_axis", np.array([0]))
        y = g.op("ReduceMean", halves, axis, keepdims=0, hint=f"{name}/tta")
    return y


def _extractor_codes(g, name, ext):
    """The CNN codes of a fitted CNNFeatureExtractor, as its ``transform`` does."""
    from ._extractor import _Outputs

    codes = _network(
        g,
        name,
        _Outputs(ext._net(), ext.layers_, ext.pooling),
        ext.preprocessing_,
        ext._digest,
        # the extractor's own engine key: its cached graph is reused
        f"codes of layers {ext.layers_}, pooling {ext.pooling}",
    )
    if ext.normalize:  # transform's L2 normalization, after the network
        norm = g.op("ReduceL2", codes, g.const("axis1", np.array([1])), keepdims=1)
        norm = g.op("Max", norm, g.const("eps", np.float32(1e-12)))
        codes = g.op("Div", codes, norm, hint=f"{name}/normalized")
    return codes, ext.n_features_out_


def _image_stage(g, step, name):
    """Codes of an extractor or a FeatureUnion of extractors: ``(edge, width)``."""
    from sklearn.pipeline import FeatureUnion

    from ._extractor import CNNFeatureExtractor

    if isinstance(step, CNNFeatureExtractor):
        return _extractor_codes(g, name, step)
    parts, width = [], 0
    weights = step.transformer_weights or {}
    for sub, ext in step.transformer_list:
        if isinstance(ext, str) and ext == "drop":
            continue
        if not isinstance(ext, CNNFeatureExtractor):
            raise ValueError(
                f"FeatureUnion {name!r}: part {sub!r} is a {type(ext).__name__}; "
                f"export_onnx exports unions of CNNFeatureExtractor steps only."
            )
        codes, w = _extractor_codes(g, f"{name}/{sub}", ext)
        if sub in weights:
            codes = g.op("Mul", codes, g.const("weight", np.float32(weights[sub])))
        parts.append(codes)
        width += w
    if not isinstance(step, FeatureUnion) or not parts:
        raise ValueError(f"{name!r} holds no CNNFeatureExtractor to export.")
    return g.op("Concat", *parts, axis=1, hint=f"{name}/codes"), width


def _union_preprocessing(union):
    """The one input size and resize rule every extractor of a union shares."""
    from ._extractor import CNNFeatureExtractor

    exts = [
        (n, e) for n, e in union.transformer_list if isinstance(e, CNNFeatureExtractor)
    ]
    unset = [n for n, e in exts if e.input_size is None]
    if unset:
        raise ValueError(
            f"the FeatureUnion's extractors {unset} have input_size=None (their "
            f"weights' own size). One exported file takes images of one size: set "
            f"input_size explicitly, to the same value, on every extractor of the "
            f"union, and refit."
        )
    seen = {
        n: (
            tuple(e.preprocessing_.input_size),
            e.preprocessing_.resize,
            e.preprocessing_.crop_pct if e.preprocessing_.resize == "crop" else None,
            e.preprocessing_.interpolation,
        )
        for n, e in exts
    }
    if len(set(seen.values())) > 1:
        raise ValueError(
            f"the FeatureUnion's extractors resize images differently (input_size, "
            f"resize, crop_pct, interpolation): {seen}. One exported file takes "
            f"images of one size, resized one way: give every extractor the same "
            f"input_size and resize, and refit."
        )
    return exts[0][1].preprocessing_ if exts else None


# --------------------------------------------------- whole-network estimators
@dataclass(frozen=True)
class _Network:
    """What export needs of an image estimator that is one torch network."""

    module: object  # torch.nn.Module: normalized (b, c, h, w) -> (b, k) outputs
    preprocessing: object  # Preprocessing
    digest: object  # callable -> str, the weights' digest
    what: str  # the engine's description of the graph (its cache key)
    outputs: object  # (graph, network outputs) -> (reference, file outputs)


def _finetuned(est, outputs):
    """The fitted network of a fine-tuned estimator (``BaseFineTuned``)."""
    from ._cache import state_digest

    module = est.net_.module_
    return _Network(
        module=module,
        preprocessing=est.preprocessing_,
        digest=lambda: state_digest(module),
        # what the estimator's predict engine calls it: the same cached graph
        what=f"fine-tuned {type(module.head).__name__} outputs",
        outputs=outputs,
    )


def _finetuned_classifier(est):
    temperature = float(getattr(est, "temperature_", 1.0))

    def scaled(g, y):  # predict_proba's logits / temperature_
        if temperature == 1.0:
            return y
        return g.op("Div", y, g.const("temperature", np.float32(temperature)))

    if est._multilabel:
        return _finetuned(est, lambda g, y: sigmoid_outputs(g, scaled(g, y)))
    return _finetuned(
        est,
        lambda g, y: softmax_outputs(g, scaled(g, y), est.classes_, TensorProto.FLOAT),
    )


def _finetuned_regressor(est):
    return _finetuned(
        est,
        lambda g, y: values_outputs(
            g, y, est.target_scale_, est.target_mean_, est._single_target
        ),
    )


#: Image estimators that are one torch network: class name -> a function of the
#: fitted estimator returning its :class:`_Network` (the network, and how its
#: outputs become the file's: :mod:`sktransfer._onnx_graph`'s ``*_outputs``).
_NETWORKS = {
    "FineTunedClassifier": _finetuned_classifier,
    "FineTunedRegressor": _finetuned_regressor,
}


def _network_estimator(g, est, name):
    tta = getattr(est, "tta", None)
    if tta not in (None, "flip"):
        raise ValueError(
            f"{name}: tta={tta!r} draws random views, which an ONNX file does not "
            f"compute; export with tta=None or tta='flip' "
            f"(set_params(tta='flip')), or average the file's outputs over your "
            f"own augmented copies."
        )
    net = _NETWORKS[type(est).__name__](est)
    y = _network(
        g,
        name,
        net.module,
        net.preprocessing,
        net.digest,
        net.what,
        flip=est._n_outputs() if tta == "flip" else None,
    )
    return net.preprocessing, net.outputs(g, y)


# ---------------------------------------------------------------- the plan
def _steps(fitted):
    """``[(name, step)]`` of a fitted model, a Pipeline's passthroughs dropped."""
    from sklearn.pipeline import Pipeline

    if isinstance(fitted, Pipeline):
        return [(n, s) for n, s in fitted.steps if s not in (None, "passthrough")]
    return [(type(fitted).__name__, fitted)]


def _build(fitted, opset):
    """The graph of ``fitted``: ``(model, preprocessing, reference, outputs)``."""
    from sklearn.pipeline import FeatureUnion
    from sklearn.utils.validation import check_is_fitted

    from ._extractor import CNNFeatureExtractor

    steps = _steps(fitted)
    if not steps:
        raise ValueError("the pipeline has no steps to export.")
    check_is_fitted(steps[-1][1])
    g = Graph(opset)
    (first_name, first), tail = steps[0], steps[1:]
    if type(first).__name__ in _NETWORKS:
        if tail:
            raise ValueError(
                f"{type(first).__name__} must be the last step of the pipeline; "
                f"steps after it: {[n for n, _ in tail]}."
            )
        p, (reference, outputs) = _network_estimator(g, first, first_name)
    elif isinstance(first, (CNNFeatureExtractor, FeatureUnion)):
        p = (
            first.preprocessing_
            if isinstance(first, CNNFeatureExtractor)
            else _union_preprocessing(first)
        )
        codes, width = _image_stage(g, first, first_name)
        reference, outputs = _head_stage(g, codes, width, tail)
    else:
        raise TypeError(
            f"export_onnx exports models that take images: a CNNFeatureExtractor "
            f"(or a FeatureUnion of them) followed by scikit-learn steps or a "
            f"few-shot head, or a {' / '.join(_NETWORKS)}; the first step "
            f"{first_name!r} is a {type(first).__name__}."
        )
    h, w = p.input_size
    inputs = [
        helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", h, w, 3])
    ]
    doc = f"{_describe(fitted)}, exported by sktransfer.export_onnx"
    return g.model(inputs, outputs, doc), p, reference, outputs


def _head_stage(g, codes, width, tail):
    """The outputs of the steps after the image stage (none: the features)."""
    if not tail:
        return "features", [("features", codes, TensorProto.FLOAT, ["batch", width])]
    names, steps = zip(*tail, strict=True)
    head = HEADS.get(type(steps[-1]).__name__)
    if head is None:
        return convert_sklearn_steps(g, codes, width, list(steps), list(names))
    if len(steps) > 1:  # scikit-learn transformers before the head
        _, outs = convert_sklearn_steps(
            g, codes, width, list(steps[:-1]), list(names[:-1])
        )
        codes = outs[0][1]
    return head(g, codes, steps[-1])


def _describe(fitted):
    from sklearn.pipeline import Pipeline

    if isinstance(fitted, Pipeline):
        return f"Pipeline({', '.join(type(s).__name__ for _, s in _steps(fitted))})"
    return type(fitted).__name__


# ---------------------------------------------------------------- metadata
def _versions():
    from ._engine import OPSET
    from ._runtime import library_versions

    v = library_versions(
        ("sktransfer", "torch", "timm", "sklearn", "skl2onnx", "onnx", "onnxruntime")
    )
    v["numpy"] = np.__version__
    v["opset"] = OPSET
    return v


def _preprocessing_record(fitted, p):
    from sklearn.pipeline import FeatureUnion

    from ._extractor import CNNFeatureExtractor

    parts = [s for _, s in _steps(fitted)][:1]
    if isinstance(parts[0], FeatureUnion):
        parts = [
            e
            for _, e in parts[0].transformer_list
            if isinstance(e, CNNFeatureExtractor)
        ]
    preps = [getattr(s, "preprocessing_", p) for s in parts]
    return {
        "input_size": list(p.input_size),
        "resize": p.resize,
        "crop_pct": p.crop_pct,
        "interpolation": p.interpolation,
        "in_graph": "x / 255, then (x - mean) / std per channel, for each network",
        "normalization": [{"mean": list(q.mean), "std": list(q.std)} for q in preps],
    }


_OUTPUT_DOCS = {
    "label": "predicted label of each image (predict); for a multi-label model "
    "a 0/1 indicator per label",
    "probabilities": "class probabilities, columns in the order of classes "
    "(predict_proba); for a multi-label model each label's probability",
    "decision": "decision values (decision_function; (batch,) for two classes: "
    "the score of classes[1])",
    "values": "predicted values (predict)",
    "features": "the features the model computes (transform)",
}


def _metadata(fitted, p, outputs, reference, check):
    classes = _classes_of(fitted)
    meta = {
        "format": FORMAT,
        "estimator": _describe(fitted),
        "input": json.dumps(
            {
                "name": INPUT,
                "shape": ["batch", *p.input_size, 3],
                "dtype": "uint8",
                "layout": "NHWC",
                "channels": "RGB",
                "resized": "to input_size by the client (see preprocessing)",
            }
        ),
        "input_size": json.dumps(list(p.input_size)),
        "preprocessing": json.dumps(_preprocessing_record(fitted, p)),
        "outputs": json.dumps({n: _OUTPUT_DOCS[n] for n, *_ in outputs}),
        "reference": reference,
        "versions": json.dumps(_versions()),
        "check": json.dumps(check),
    }
    if classes is not None:
        meta["classes"] = json.dumps(np.asarray(classes).tolist())
    return meta


def _classes_of(fitted):
    last = _steps(fitted)[-1][1]
    return getattr(last, "classes_", None)


# ------------------------------------------------------------------- check
def _probe(p, probe):
    """The probe batch twice: ``(for the estimator, as the file takes it)``.

    The estimator gets the images as they are; the file gets them resized by
    sktransfer's own code (:class:`~sktransfer._images.Preprocessor`: PIL in
    uint8 for images that shrink), which a client must reproduce. So the check
    covers the resize rule too (``"crop"`` changes even images already at the
    input size). Default: seeded noise and a black and a white image at twice
    the input size.
    """
    from ._images import Preprocessor, _shrinks, check_images

    h, w = p.input_size
    if probe is None:
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 256, (PROBE_IMAGES - 2, 2 * h, 2 * w, 3))
        flat = np.stack([np.zeros((2 * h, 2 * w, 3)), np.full((2 * h, 2 * w, 3), 255)])
        probe = np.concatenate([noise, flat]).astype(np.uint8)
    probe = np.asarray(probe)
    if probe.dtype != np.uint8 or probe.ndim != 4 or probe.shape[-1] != 3:
        raise ValueError(
            f"probe must be a uint8 array of RGB images (n, height, width, 3); got "
            f"dtype {probe.dtype}, shape {probe.shape}."
        )
    if probe.shape[1:3] == (h, w) and p.resize == "squash":
        return probe, probe
    if not len(probe) or not _shrinks(*probe.shape[1:3], p):
        raise ValueError(
            f"probe images of size {probe.shape[1:3]} are not shrunk to the input "
            f"size {(h, w)} (resize={p.resize!r}); pass larger images."
        )
    pre = Preprocessor(p)
    resized = pre.load_batch(check_images(probe), range(len(probe))).numpy()
    resized = np.rint(resized * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return probe, np.ascontiguousarray(resized)


def _margins(scores):
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        return np.abs(scores)
    top = np.sort(scores, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0] if scores.shape[1] > 1 else np.full(len(top), np.inf)


def _check(model, fitted, probe, resized, reference):
    """Run the file on ``resized``; compare with ``fitted`` on ``probe``.

    Returns what the check measured (recorded in the metadata); raises
    RuntimeError on a mismatch.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    got = dict(
        zip(
            [o.name for o in session.get_outputs()],
            session.run(None, {INPUT: resized}),
            strict=True,
        )
    )
    want = {
        "probabilities": ("predict_proba", "probabilities"),
        "decision": ("decision_function", "decision"),
        "values": ("predict", "values"),
        "features": ("transform", "features"),
    }[reference]
    expected = np.asarray(getattr(fitted, want[0])(probe), np.float64)
    actual = np.asarray(got[want[1]], np.float64)
    problems, record = [], {"probe_images": list(probe.shape)}
    if actual.shape != expected.shape:
        problems.append(
            f"{want[1]} has shape {actual.shape}, {want[0]} {expected.shape}"
        )
    else:
        err = float(np.abs(actual - expected).max())
        if reference == "probabilities":
            bound, how = TOLERANCE, "absolute"
        else:
            bound = TOLERANCE * max(float(np.abs(expected).max()), 1e-12)
            how = "of their largest magnitude"
        record[f"max_abs_diff_{want[1]}"] = err
        if not err <= bound:
            problems.append(
                f"{want[1]} differ from {want[0]} by up to {err:.2e} (tolerance "
                f"{TOLERANCE:g} {how})"
            )
    if "label" in got:
        labels = np.asarray(fitted.predict(probe))
        scores = (
            fitted.decision_function(probe)
            if hasattr(fitted, "decision_function")
            else expected
        )
        if labels.ndim == 2:  # multi-label indicators: a near-tie per element
            clear = np.abs(np.asarray(scores, np.float64)) >= TOLERANCE
        else:
            clear = _margins(scores) >= TOLERANCE
        differ = clear & (np.asarray(got["label"]) != labels)
        record["labels_compared"] = int(clear.sum())
        if differ.any():
            i = int(np.flatnonzero(differ.reshape(len(differ), -1).any(1))[0])
            problems.append(
                f"{int(differ.sum())} labels differ from predict away from ties, "
                f"e.g. image {i}: {got['label'][i]!r} vs {labels[i]!r}"
            )
    if problems:
        raise RuntimeError(
            f"the exported file disagrees with the estimator on the probe batch: "
            f"{'; '.join(problems)}. Nothing was written. (The file computes in "
            f"float32: a model that predicts in bf16 or on CUDA differs, so set "
            f"device='cpu', precision='fp32' on its extractors before exporting; "
            f"a skl2onnx converter that does not reproduce its step does this "
            f"too.)"
        )
    return record


# -------------------------------------------------------------------- public
def export_onnx(fitted, path, *, probe=None):
    """Write a fitted model as one ONNX file that ONNX Runtime serves alone.

    The file takes uint8 RGB images of shape ``(batch, height, width, 3)``,
    already resized to the model's input size (its ``input_size`` metadata),
    and does the rest inside: normalization, the network(s), the head. Serving
    needs onnxruntime and numpy only (and PIL, or any image library, to decode
    and resize); ``examples/deployment/onnx_client.py`` labels a folder of
    images that way. Before the file is written it is run by ONNX Runtime on a
    probe batch and compared with the estimator itself.

    Parameters
    ----------
    fitted : estimator
        A fitted model that takes images:

        * a :class:`~sklearn.pipeline.Pipeline` whose first step is a
          :class:`~sktransfer.CNNFeatureExtractor`, or a
          :class:`~sklearn.pipeline.FeatureUnion` of extractors that share one
          explicit ``input_size``, followed by scikit-learn steps that skl2onnx
          converts (``StandardScaler``, ``PCA``, ``LogisticRegression``,
          ``SVC``, ``LinearSVC``, ``Ridge``, ``KNeighborsClassifier``, ...), or
          by a :class:`~sktransfer.PrototypeClassifier` /
          :class:`~sktransfer.CosineSoftmaxClassifier` (after optional
          scikit-learn transformers); or no step after it (the file outputs
          the features);
        * a :class:`~sktransfer.FineTunedClassifier`, single- or multi-label,
          or a :class:`~sktransfer.FineTunedRegressor`;
        * a bare extractor or FeatureUnion of extractors.
    path : str or path-like
        Where to write the file (replaced atomically).
    probe : ndarray of shape (n, h, w, 3), dtype uint8, default=None
        Images the file is checked on: the estimator predicts them as they
        are, the file gets them resized as sktransfer resizes them (so they
        must be larger than the input size, or exactly it with
        ``resize="squash"``). ``None``: seeded noise and a black and a white
        image at twice the input size.

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        A step that cannot be exported, named (no skl2onnx converter, a
        FeatureUnion without one explicit input size, a network that does not
        take RGB images).
    TypeError
        A model that does not take images.
    RuntimeError
        The file disagrees with the estimator on the probe batch:
        probabilities by more than 1e-4 (absolute), decision values, values or
        features by more than 1e-4 of their largest magnitude, or labels away
        from near-ties (top two scores within 1e-4). Nothing is written then.

    Notes
    -----
    Outputs, by model kind: ``label`` and ``probabilities`` (classifiers with
    ``predict_proba``); ``label`` and ``decision`` (an ``SVC`` without
    ``probability=True``, ``LinearSVC``, ``RidgeClassifier``: what
    ``decision_function`` returns); ``values`` (regressors); ``features`` (a
    model ending in a transformer). The metadata (``metadata_props``, read by
    ``session.get_modelmeta().custom_metadata_map``) records, as JSON:
    ``input_size`` (height, width), ``preprocessing`` (how the client must
    resize: ``resize``, ``crop_pct``, ``interpolation``; the normalization done
    inside), ``classes``, ``outputs``, ``versions`` and the ``check``.

    The graph computes in float32 (few-shot heads in float64), whatever the
    estimator's ``precision``; a model that predicts in bf16 therefore fails
    the check. See :ref:`deployment` for the client side and the thread
    settings of a server.

    Examples
    --------
    >>> import numpy as np, onnxruntime
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer import CNNFeatureExtractor, export_onnx
    >>> X = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), np.uint8)
    >>> y = np.arange(12) % 2
    >>> ext = CNNFeatureExtractor(model="timm/test_efficientnet", weights=None,
    ...                           input_size=32)
    >>> pipe = make_pipeline(ext, LogisticRegression()).fit(X, y)
    >>> path = export_onnx(pipe, getfixture("tmp_path") / "model.onnx")
    >>> session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    >>> label, proba = session.run(None, {"images": X[:3]})
    >>> bool((label == pipe.predict(X[:3])).all())
    True
    """
    import onnx

    from ._engine import OPSET

    model, p, reference, outputs = _build(fitted, OPSET)
    onnx.checker.check_model(model)
    check = _check(model, fitted, *_probe(p, probe), reference)
    meta = _metadata(fitted, p, outputs, reference, check)
    onnx.helper.set_model_props(model, meta)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(model.SerializeToString())
        os.replace(tmp, path)  # never half a file at ``path``
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def export_model_file(model_path, out_path, *, probe=None):
    """``sktransfer export MODEL OUT.onnx``: a model file to one ONNX file.

    Parameters
    ----------
    model_path : str or path-like
        A file written by :func:`sktransfer.save`.
    out_path : str or path-like
        The ONNX file to write.
    probe : ndarray, default=None
        As for :func:`export_onnx`.

    Returns
    -------
    summary : str
        One line for the command to print: the file, its input and outputs.
    """
    import onnx

    from ._persistence import load

    path = export_onnx(load(model_path), out_path, probe=probe)
    meta = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    shape = json.loads(meta["input"])["shape"]
    outs = ", ".join(json.loads(meta["outputs"]))
    return (
        f"wrote {path} ({meta['estimator']}): input {INPUT!r} uint8 {shape}; "
        f"outputs {outs}"
    )
