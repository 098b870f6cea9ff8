"""The ONNX graph of an exported model: a small builder and the heads on features.

:func:`sktransfer.export_onnx` (``_export``) decides what a fitted estimator is;
this module writes ONNX for its parts:

* :class:`Graph` -- nodes, initializers and opsets of one file; sub-models (a
  network's graph, a skl2onnx head) are copied in under a prefix;
* :func:`convert_sklearn_steps` -- scikit-learn steps converted by skl2onnx,
  with a ``ValueError`` naming any step it has no converter for;
* :data:`HEADS` -- the few-shot heads, written here node by node (the
  arithmetic of :mod:`sktransfer._heads`, in float64 as the estimators compute
  it);
* :func:`softmax_outputs` / :func:`sigmoid_outputs` -- ``label`` and
  ``probabilities`` from logits (single-label / multi-label);
  :func:`values_outputs` -- a regressor's ``values``.

Each head returns ``(reference, outputs)``: the name of the estimator's method
the export check compares with (``"probabilities"`` for ``predict_proba``,
``"decision"``, ``"values"``, ``"features"``) and the file's outputs as
``(name, edge, element type, shape)``.
"""

from __future__ import annotations

import warnings

import numpy as np
from onnx import TensorProto, compose, helper, numpy_helper

__all__ = [
    "HEADS",
    "Graph",
    "convert_sklearn_steps",
    "sigmoid_outputs",
    "softmax_outputs",
    "values_outputs",
]


class Graph:
    """Nodes, initializers and opsets of the file being built.

    Sub-models (a network's graph, a skl2onnx head) are copied in with a
    prefix on every name (:meth:`include`), so they never clash.
    """

    def __init__(self, opset):
        self.nodes, self.initializers, self.functions = [], [], []
        self.opsets = {"": opset}
        self.ir_version = 8
        self._n = 0

    def name(self, hint):
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint, value):
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, *inputs, hint=None, **attrs):
        """Add one node; returns the name of its (single) output."""
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def include(self, model, prefix, feeds):
        """Copy ``model`` in; ``feeds`` maps its inputs to names of this graph.

        Returns ``{output name: (name here, element type)}``.
        """
        model = compose.add_prefix(model, f"{prefix}/")
        graph = model.graph
        own = {t.name for t in graph.initializer}
        for value in graph.input:
            if value.name in own:
                continue
            original = value.name[len(prefix) + 1 :]
            self.nodes.append(
                helper.make_node("Identity", [feeds[original]], [value.name])
            )
        self.nodes.extend(graph.node)
        self.initializers.extend(graph.initializer)
        self.functions.extend(model.functions)
        for imp in model.opset_import:
            self.opsets[imp.domain] = max(self.opsets.get(imp.domain, 0), imp.version)
        self.ir_version = max(self.ir_version, model.ir_version)
        return {
            v.name[len(prefix) + 1 :]: (v.name, v.type.tensor_type.elem_type)
            for v in graph.output
        }

    def model(self, inputs, outputs, doc):
        """The ModelProto; ``outputs`` is ``[(name, edge, elem_type, shape)]``."""
        nodes = list(self.nodes)
        values = []
        for name, edge, elem_type, shape in outputs:
            nodes.append(helper.make_node("Identity", [edge], [name]))
            values.append(helper.make_tensor_value_info(name, elem_type, shape))
        graph = helper.make_graph(
            nodes, "sktransfer", inputs, values, initializer=self.initializers
        )
        opsets = [helper.make_opsetid(d, v) for d, v in sorted(self.opsets.items())]
        model = helper.make_model(
            graph,
            opset_imports=opsets,
            functions=self.functions,
            producer_name="sktransfer",
            doc_string=doc,
        )
        model.ir_version = self.ir_version
        return model


def _classes_const(g, classes):
    """The labels as an ONNX constant; returns ``(name, elem_type)``."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "iub":
        return g.const("classes", classes.astype(np.int64)), TensorProto.INT64
    if classes.dtype.kind == "f":
        return g.const("classes", classes.astype(np.float64)), TensorProto.DOUBLE
    if all(isinstance(c, str) for c in classes.tolist()):
        return g.const("classes", classes.astype(object)), TensorProto.STRING
    raise ValueError(
        f"class labels of type {classes.dtype} cannot be ONNX labels; use int or "
        f"str labels."
    )


def softmax_outputs(g, logits, classes, dtype):
    """``label`` (argmax) and ``probabilities`` (softmax) of ``(n, k)`` logits."""
    table, label_type = _classes_const(g, classes)
    idx = g.op("ArgMax", logits, axis=1, keepdims=0)
    label = g.op("Gather", table, idx, axis=0, hint="label")
    proba = g.op("Softmax", logits, axis=1)
    if dtype != TensorProto.FLOAT:
        proba = g.op("Cast", proba, to=TensorProto.FLOAT)
    k = len(classes)
    return "probabilities", [
        ("label", label, label_type, ["batch"]),
        ("probabilities", proba, TensorProto.FLOAT, ["batch", k]),
    ]


def sigmoid_outputs(g, logits):
    """Multi-label outputs of ``(n, k)`` logits: ``label``, a 0/1 indicator per
    label (a logit above 0, as ``predict``), and ``probabilities``, each
    label's sigmoid."""
    zero = g.const("zero", np.float32(0.0))
    label = g.op("Cast", g.op("Greater", logits, zero), to=TensorProto.INT64)
    proba = g.op("Sigmoid", logits)
    return "probabilities", [
        ("label", label, TensorProto.INT64, ["batch", None]),
        ("probabilities", proba, TensorProto.FLOAT, ["batch", None]),
    ]


def values_outputs(g, outputs, scale, offset, single_target):
    """``values``: a network's standardized ``(n, t)`` outputs on the targets'
    scale (``outputs * scale + offset``, in float64), ``(n,)`` for one target."""
    x = g.op("Cast", outputs, to=TensorProto.DOUBLE)
    x = g.op("Mul", x, g.const("target_scale", np.asarray(scale, np.float64)))
    x = g.op("Add", x, g.const("target_mean", np.asarray(offset, np.float64)))
    x = g.op("Cast", x, to=TensorProto.FLOAT)
    if single_target:
        return "values", [("values", _column(g, x, 0), TensorProto.FLOAT, ["batch"])]
    return "values", [("values", x, TensorProto.FLOAT, ["batch", len(scale)])]


def _unit_rows(g, x):
    """:func:`_heads.normalize_rows` in ONNX: rows shorter than NORM_EPS -> 0."""
    from ._heads import NORM_EPS

    sq = g.op("ReduceSum", g.op("Mul", x, x), g.const("axis1", np.array([1])))
    norm = g.op("Sqrt", sq)
    tiny = g.op("Less", norm, g.const("norm_eps", np.float64(NORM_EPS)))
    one, zero = g.const("one", np.float64(1.0)), g.const("zero", np.float64(0.0))
    scaled = g.op("Div", x, g.op("Where", tiny, one, norm))
    return g.op("Where", tiny, zero, scaled, hint="unit_rows")


def _cosine_logits(g, x, weight, scale, bias=None):
    """``scale * normalize(x) @ normalize(weight).T (+ bias)``, in float64."""
    from ._heads import normalize_rows

    w = normalize_rows(np.asarray(weight, np.float64)).numpy()
    logits = g.op("MatMul", _unit_rows(g, x), g.const("weight_t", w.T.copy()))
    logits = g.op("Mul", logits, g.const("scale", np.float64(scale)))
    if bias is not None:
        logits = g.op("Add", logits, g.const("bias", np.asarray(bias, np.float64)))
    return logits


def _prototype_head(g, x, est):
    x = g.op("Cast", x, to=TensorProto.DOUBLE)
    if est.metric == "cosine":
        logits = _cosine_logits(g, x, est.prototypes_, est.scale)
    else:  # -scale * max(|x|^2 - 2 x.P + |P|^2, 0), as PrototypeClassifier._logits
        P = np.asarray(est.prototypes_, np.float64)
        xx = g.op("ReduceSum", g.op("Mul", x, x), g.const("axis1", np.array([1])))
        xp = g.op("MatMul", x, g.const("twice_p_t", 2 * P.T))
        sq = g.op("Add", g.op("Sub", xx, xp), g.const("pp", (P**2).sum(1)))
        sq = g.op("Max", sq, g.const("zero", np.float64(0.0)))
        logits = g.op("Mul", sq, g.const("minus_scale", np.float64(-est.scale)))
    return softmax_outputs(g, logits, est.classes_, TensorProto.DOUBLE)


def _cosine_softmax_head(g, x, est):
    x = g.op("Cast", x, to=TensorProto.DOUBLE)
    logits = _cosine_logits(g, x, est.coef_, est.scale_, est.intercept_)
    return softmax_outputs(g, logits, est.classes_, TensorProto.DOUBLE)


#: Heads on features written here rather than by skl2onnx: class name ->
#: ``builder(graph, features, fitted) -> (reference, outputs)`` where
#: ``reference`` names the estimator method the check compares with.
HEADS = {
    "PrototypeClassifier": _prototype_head,
    "CosineSoftmaxClassifier": _cosine_softmax_head,
}


def convert_sklearn_steps(g, x, width, steps, names):
    """Fitted scikit-learn ``steps`` on the ``(n, width)`` float features ``x``.

    Converted by skl2onnx. What the estimator returns decides the outputs and
    their shapes (read from the fitted steps on one row of zeros), so a
    binary ``decision_function`` or a single-target regressor gives ``(n,)``
    as in scikit-learn.
    """
    from sklearn.base import is_classifier, is_regressor
    from sklearn.pipeline import Pipeline

    options = {}
    for name, est in zip(names, steps, strict=True):
        _check_convertible(est, name, options)
    pipe = Pipeline(list(zip(names, steps, strict=True)))
    try:
        onx = _convert(pipe, width, options)
    except Exception as exc:  # noqa: BLE001 - a converter's own failure
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ValueError(
            f"skl2onnx could not convert the steps {names} "
            f"({type(exc).__name__}: {first})."
        ) from None
    out = g.include(onx, "head", {"codes": x})
    last, row = steps[-1], np.zeros((1, width), np.float32)
    if is_classifier(last):
        (label, label_type), (scores, _) = out["label"], out["probabilities"]
        label_out = ("label", label, label_type, ["batch"])
        k = len(last.classes_)
        if hasattr(pipe, "predict_proba"):
            return "probabilities", [
                label_out,
                ("probabilities", scores, TensorProto.FLOAT, ["batch", k]),
            ]
        if np.ndim(pipe.decision_function(row)) == 1:  # two classes: one column
            column = BINARY_DECISION_COLUMN.get(type(last).__name__, -1)
            decision = (_column(g, scores, column), ["batch"])
        else:
            decision = (scores, ["batch", k])
        edge, shape = decision
        return "decision", [label_out, ("decision", edge, TensorProto.FLOAT, shape)]
    values, elem = next(iter(out.values()))
    if is_regressor(last):
        if np.ndim(pipe.predict(row)) == 1:
            return "values", [("values", _column(g, values, -1), elem, ["batch"])]
        return "values", [("values", values, elem, ["batch", None])]
    return "features", [("features", values, elem, ["batch", None])]


#: The column of skl2onnx's two-class scores that is ``decision_function``, by
#: estimator (default: the last). Read from skl2onnx 1.20's outputs: its SVC
#: converter returns ``[d, -d]``, SGDClassifier ``[-d, d]``, LinearSVC and
#: RidgeClassifier ``[d]``; the check at export catches any change.
BINARY_DECISION_COLUMN = {"SVC": 0, "NuSVC": 0}


def _column(g, x, i):
    """Column ``i`` of a ``(n, k)`` tensor, as ``(n,)``."""
    end = np.iinfo(np.int64).max if i == -1 else i + 1
    cols = g.op(
        "Slice",
        x,
        g.const("start", np.array([i])),
        g.const("end", np.array([end])),
        g.const("axis1", np.array([1])),
    )
    return g.op("Reshape", cols, g.const("flat", np.array([-1])))


def _convert(pipe, width, options):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from ._engine import OPSET

    with warnings.catch_warnings():
        # skl2onnx warns that its latest tested opset is not the one asked for,
        # and reads SVC's probA_ / probB_, deprecated by scikit-learn 1.9
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings("ignore", "Attribute `prob", FutureWarning)
        return convert_sklearn(
            pipe,
            initial_types=[("codes", FloatTensorType([None, width]))],
            target_opset=OPSET,
            options=options,
        )


def _check_convertible(est, where, options):
    """Raise a ValueError naming ``where`` if skl2onnx has no converter for it."""
    import skl2onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(est, Pipeline):
        for name, sub in est.steps:
            if sub not in (None, "passthrough"):
                _check_convertible(sub, f"{where}/{name}", options)
        return
    if isinstance(est, (FeatureUnion, ColumnTransformer)):
        parts = getattr(est, "transformer_list", None) or est.transformers_
        for name, sub, *_ in parts:
            if not isinstance(sub, str):
                _check_convertible(sub, f"{where}/{name}", options)
        return
    try:
        alias = skl2onnx.get_model_alias(type(est))
    except RuntimeError:
        raise ValueError(
            f"step {where!r} ({type(est).__name__}) cannot be exported to ONNX: "
            f"skl2onnx {skl2onnx.__version__} has no converter for it. Replace "
            f"it with a step skl2onnx converts (skl2onnx.supported_converters() "
            f"lists them), or register a converter for it with "
            f"skl2onnx.update_registered_converter."
        ) from None
    from skl2onnx.common._registration import get_converter

    allowed = get_converter(alias).get_allowed_options() or {}
    # Probabilities as a tensor, not a list of dicts. Every step gets an entry:
    # skl2onnx's Pipeline parser asks zipmap of a classifier without one, which
    # fails for those that do not take the option (LinearSVC).
    options[id(est)] = {"zipmap": False} if "zipmap" in allowed else {}
