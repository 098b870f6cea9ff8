"""Sphinx configuration for sktransfer (builds offline: no intersphinx)."""

import os
import sys
import time
import warnings

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")
# One torch thread by default: measured on a busy 2-core machine, two OpenMP
# threads made a small conv net's training step 6x slower in wall time and 11x
# more CPU (threads spin-wait for each other when the cores are shared), while
# one thread keeps the whole gallery within a few CPU minutes. Export
# OMP_NUM_THREADS=2 (or more) on an idle machine to use more cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))

import sktransfer  # noqa: E402

project = "sktransfer"
author = "sktransfer developers"
copyright = f"{time.strftime('%Y')}, {author}"
version = release = sktransfer.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
root_doc = "index"
default_role = "literal"

# ------------------------------------------------------------------ references
# Broken cross-references are errors (the Makefile builds with -W): every
# ``:class:`` / ``:func:`` must resolve, apart from the outside names below
# (no intersphinx: the build must work offline).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|torchvision|timm|numpy|np|sklearn|skorch|PIL|pandas)(\..*)?"),
    (r"py:.*", r"(ndarray|array-like|array|callable|path|enum|module|images|iterable)"),
    (r"py:.*", r"(of|shape|or|default|optional|str|int|float|bool|list|tuple|dict)"),
    (r"py:.*", r"(None|True|False|\{.*|.*\}|\(.*|.*\)|n_samples|n_features.*|dtype)"),
    (r"py:.*", r"(float32|uint8|sequence|object|Bunch|os\.PathLike|pathlib\.Path)"),
    (r"py:.*", r"(Pipeline|GridSearchCV|LogisticRegression|SVC|FeatureUnion)"),
]
# Estimators built in sibling branches: ignored only until they exist here, so a
# See Also entry pointing to them does not break the build before they land.
for _name in (
    "FineTunedClassifier",
    "PrototypeClassifier",
    "CosineSoftmaxClassifier",
    "compare_strategies",
):
    if not hasattr(sktransfer, _name):
        nitpick_ignore_regex.append((r"py:.*", rf"(sktransfer\.)?{_name}"))

# ------------------------------------------------------------------ autodoc / numpydoc
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# ------------------------------------------------------------------ gallery
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "capture_repr": ("_repr_html_", "__repr__"),
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "plot_gallery": "True",
    "min_reported_time": 5,
    "doc_module": ("sktransfer",),
    "backreferences_dir": "auto_examples/backreferences",
}

warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    message="Matplotlib is currently using agg, which is a non-GUI backend",
)

# ------------------------------------------------------------------ API page
# api.rst is written here from the modules' ``__all__``, so every public name is
# documented and a name added by a merged branch appears without editing the
# docs (the build then fails if its docstring has a broken reference).
API_SECTIONS = [
    ("Feature extraction", "sktransfer", ["CNNFeatureExtractor"]),
    ("Fine-tuning", "sktransfer", ["FineTunedClassifier"]),
    (
        "Few-shot heads",
        "sktransfer",
        ["PrototypeClassifier", "CosineSoftmaxClassifier"],
    ),
    (
        "Backbones",
        "sktransfer",
        ["load_backbone", "list_layers", "offline_backbones", "Preprocessing"],
    ),
    ("Model selection", "sktransfer.model_selection", None),
    ("Callbacks", "sktransfer.callbacks", None),
    ("Datasets", "sktransfer.datasets", None),
]


def _public(module_name):
    import importlib
    import inspect

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return {}
    out = {}
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name, None)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            out[name] = "class.rst" if inspect.isclass(obj) else "function.rst"
    return out


def write_api_rst():
    lines = [
        ".. _api:",
        "",
        "=============",
        "API reference",
        "=============",
        "",
        "Every public name of the package. Estimators follow scikit-learn's rules:",
        "they clone, pickle, validate their parameters in ``fit`` and work inside",
        ":class:`~sklearn.pipeline.Pipeline` and",
        ":class:`~sklearn.model_selection.GridSearchCV`.",
        "",
    ]
    top = _public("sktransfer")
    placed = set()
    for title, module_name, names in API_SECTIONS:
        public = top if module_name == "sktransfer" else _public(module_name)
        names = [n for n in (names or sorted(public)) if n in public]
        if module_name != "sktransfer":  # documented once, where users import it
            names = [n for n in names if n not in top]
        if not names:
            continue
        lines += [title, "=" * len(title), "", f".. currentmodule:: {module_name}", ""]
        for template in ("class.rst", "function.rst"):
            group = [n for n in names if public[n] == template]
            if group:
                lines += [
                    ".. autosummary::",
                    "   :toctree: generated/",
                    f"   :template: {template}",
                    "",
                ]
                lines += [f"   {n}" for n in group] + [""]
        if module_name == "sktransfer":
            placed.update(names)
    rest = [n for n in top if n not in placed]
    if rest:
        lines += ["Other", "=====", "", ".. currentmodule:: sktransfer", ""]
        for template in ("class.rst", "function.rst"):
            group = [n for n in rest if top[n] == template]
            if group:
                lines += [".. autosummary::", "   :toctree: generated/",
                          f"   :template: {template}", ""]  # fmt: skip
                lines += [f"   {n}" for n in group] + [""]
    text = "\n".join(lines)
    path = os.path.join(HERE, "api.rst")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


write_api_rst()

# ------------------------------------------------------------------ HTML
html_theme = "pydata_sphinx_theme"
html_title = f"sktransfer {version}"
html_static_path = ["_static"]
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
