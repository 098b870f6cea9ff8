"""The API page (``api.rst``), written from the modules' ``__all__``.

Every public name sits in one named group, listed with its import path
(``sktransfer.model_selection.EpisodicSplit`` is
``from sktransfer.model_selection import EpisodicSplit``). A name a merged
branch adds to an ``__all__`` without a group here fails the docs build and
``tests/test_docs_api.py``, instead of landing under a catch-all heading.

No side effects on import (``conf.py`` calls :func:`write_api_rst`), so the
tests read the groups without building the docs.
"""

import importlib
import inspect
import os

# numpydoc validation of every docstring the build renders (docs/conf.py) and
# of every public object (tests/test_docs_api.py): each parameter described
# (PR01), none described that the signature lacks (PR02).
NUMPYDOC_CHECKS = ("PR01", "PR02")
# Not ours to document: the hooks WeightTracker inherits from skorch's Callback
# (skorch calls them and documents them) and the count / index methods the
# named tuple ScoreSummary inherits from tuple.
NUMPYDOC_EXCLUDE = (
    r"^sktransfer\.callbacks\.WeightTracker\.on_(batch_begin|batch_end|"
    r"epoch_begin|grad_computed|train_end)$",
    r"^sktransfer\.model_selection\.ScoreSummary\.(count|index)$",
)

# The modules whose ``__all__`` is public API, where users import from.
PUBLIC_MODULES = (
    "sktransfer",
    "sktransfer.model_selection",
    "sktransfer.callbacks",
    "sktransfer.datasets",
)

# (title, one line saying what the group is for, [(module, [names])]).
# A name is documented once, under the module users import it from: the top
# level when it is there, else its submodule.
API_SECTIONS = [
    (
        "Estimators: CNN codes",
        "A transformer from images to CNN codes, for any scikit-learn head.",
        [("sktransfer", ["CNNFeatureExtractor"])],
    ),
    (
        "Estimators: fine-tuning",
        "A pretrained network with a new head, trained on your images.",
        [("sktransfer", ["FineTunedClassifier", "FineTunedRegressor"])],
    ),
    (
        "Estimators: few-shot heads",
        "Heads on CNN codes for classes with 1-20 images each.",
        [("sktransfer", ["PrototypeClassifier", "CosineSoftmaxClassifier"])],
    ),
    (
        "Model selection",
        "Which strategy wins on your data, measured by cross-validation.",
        [
            ("sktransfer", ["compare_strategies", "StrategyReport"]),
            ("sktransfer.model_selection", ["summarize_scores", "ScoreSummary"]),
        ],
    ),
    (
        "Splitters",
        "Cross-validation splitters for few-shot evaluation (any ``cv=``).",
        [
            (
                "sktransfer.model_selection",
                ["EpisodicSplit", "ClassDisjointSplit", "class_disjoint_split"],
            )
        ],
    ),
    (
        "Strategy registry",
        "The strategies ``compare_strategies`` runs, by name "
        "(``sktransfer.model_selection.STRATEGIES``: name -> ``Strategy``), "
        "and the rules that pick them.",
        [
            (
                "sktransfer.model_selection",
                [
                    "Strategy",
                    "StrategyContext",
                    "PixelFeatures",
                    "available_strategies",
                    "parse_strategies",
                    "resolve_strategies",
                    "auto_strategies",
                    "earlier_layer",
                    "top_blocks",
                    "finetune_input_size",
                ],
            )
        ],
    ),
    (
        "Persistence",
        "Save a fitted estimator or pipeline without pickle, load it back.",
        [("sktransfer", ["save", "load"])],
    ),
    (
        "Export",
        "A fitted model as one ONNX file.",
        [("sktransfer", ["export_onnx"])],
    ),
    (
        "Backbones",
        "Pretrained networks by name, their layers and their preprocessing.",
        [
            (
                "sktransfer",
                ["load_backbone", "list_layers", "offline_backbones", "Preprocessing"],
            )
        ],
    ),
    (
        "Datasets",
        "Bundled and offline image data, and folders of your own images "
        "(``sktransfer.datasets.FASHION_MNIST_CLASSES``: the class names).",
        [("sktransfer.datasets", None)],
    ),
    (
        "Callbacks",
        "skorch callbacks for ``FineTunedClassifier(callbacks=[...])``.",
        [("sktransfer.callbacks", None)],
    ),
]


def public_names(module_name):
    """``{name: "class.rst" | "function.rst" | None}`` of a module's ``__all__``.

    ``None`` marks data (constants, registries): documented in their group's
    text, not as a page of their own.
    """
    module = importlib.import_module(module_name)
    out = {}
    for name in getattr(module, "__all__", []):
        if name.startswith("__"):
            continue
        obj = getattr(module, name)
        if inspect.isclass(obj):
            out[name] = "class.rst"
        elif inspect.isfunction(obj):
            out[name] = "function.rst"
        else:
            out[name] = None
    return out


def placement():
    """``{module: [(section title, [names])]}``: what each group lists."""
    top = public_names("sktransfer")
    placed = {}
    for title, _, parts in API_SECTIONS:
        for module_name, names in parts:
            public = top if module_name == "sktransfer" else public_names(module_name)
            names = [n for n in (names or sorted(public)) if public.get(n)]
            if module_name != "sktransfer":  # documented once, where users import it
                names = [n for n in names if n not in top]
            placed.setdefault(module_name, []).append((title, names))
    return placed


def unplaced():
    """Public classes and functions no group lists, as ``module.name``."""
    top = public_names("sktransfer")
    placed = {
        (module, name)
        for module, groups in placement().items()
        for _, names in groups
        for name in names
    }
    missing = []
    for module_name in PUBLIC_MODULES:
        for name, kind in public_names(module_name).items():
            if kind is None or (module_name != "sktransfer" and name in top):
                continue
            if (module_name, name) not in placed:
                missing.append(f"{module_name}.{name}")
    return missing


def api_rst():
    """The text of ``api.rst``."""
    missing = unplaced()
    if missing:
        raise RuntimeError(
            f"Public names in no group of docs/_api.py API_SECTIONS: {missing}; "
            "add each to the group where a user would look for it."
        )
    lines = [
        ".. _api:",
        "",
        "=============",
        "API reference",
        "=============",
        "",
        "Every public name of the package, by what it is for, under its import",
        "path: ``sktransfer.model_selection.EpisodicSplit`` is",
        "``from sktransfer.model_selection import EpisodicSplit``. Estimators",
        "follow scikit-learn's rules: they clone, pickle, validate their",
        "parameters in ``fit`` and work inside",
        ":class:`~sklearn.pipeline.Pipeline` and",
        ":class:`~sklearn.model_selection.GridSearchCV`. Terms are defined in the",
        ":ref:`glossary`.",
        "",
    ]
    top = public_names("sktransfer")
    placed = placement()
    for title, what, parts in API_SECTIONS:
        body = []
        for module_name, _ in parts:
            public = top if module_name == "sktransfer" else public_names(module_name)
            names = next(n for t, n in placed[module_name] if t == title)
            if not names:
                continue
            # full names show the import path; no currentmodule, so the first
            # line of a docstring (the table's summary) must name others in full
            for template in ("class.rst", "function.rst"):
                group = [n for n in names if public[n] == template]
                if group:
                    body += [
                        ".. autosummary::",
                        "   :toctree: generated/",
                        f"   :template: {template}",
                        "",
                    ]
                    body += [f"   {module_name}.{n}" for n in group] + [""]
        if body:
            lines += [title, "=" * len(title), "", what, ""] + body
    return "\n".join(lines)


def write_api_rst(directory):
    """Write ``api.rst`` into ``directory`` (only when its text changed)."""
    text = api_rst()
    path = os.path.join(directory, "api.rst")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
