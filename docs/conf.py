"""Sphinx configuration for sktransfer (builds offline: no intersphinx)."""

import os
import re
import shutil
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
sys.path.insert(0, HERE)  # _api.py, _gallery_order.py

from _api import NUMPYDOC_CHECKS, NUMPYDOC_EXCLUDE, write_api_rst  # noqa: E402

import sktransfer  # noqa: E402

project = "sktransfer"
author = "sktransfer developers"
copyright = f"{time.strftime('%Y')}, {author}"
version = release = sktransfer.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",  # served from _static: see "Math, offline" below
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
# sg_execution_times pages are not written (see the gallery's config); a stale
# one from an older build is not read either.
exclude_patterns = [
    "_build",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "sg_execution_times.rst",
    "auto_examples/sg_execution_times.rst",
    "auto_examples/**/sg_execution_times.rst",
]
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
# Every parameter described, none described that the signature lacks (PR01 /
# PR02), checked on every docstring the build renders: a failure is a warning,
# so an error under -W. The checks and the exclusions (methods inherited from
# skorch and tuple) live in _api.py, which tests/test_docs_api.py applies too.
numpydoc_validation_checks = set(NUMPYDOC_CHECKS)
numpydoc_validation_exclude = set(NUMPYDOC_EXCLUDE)

# ------------------------------------------------------------------ gallery
# Sections in learning order (the subfolders of examples/, each with a README.txt)
# and a learning order inside each section (_gallery_order.py, imported by name
# so that the config stays picklable; HERE is on sys.path, see the top).
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "subsection_order": [
        "../examples/codes",
        "../examples/finetuning",
        "../examples/fewshot",
        "../examples/experiments",
        "../examples/deployment",
        "../examples/targets",
    ],
    "within_subsection_order": "_gallery_order.LearningOrder",
    "download_all_examples": False,
    "remove_config_comments": True,
    "capture_repr": ("_repr_html_", "__repr__"),
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "plot_gallery": "True",
    "min_reported_time": 5,
    # No sg_execution_times pages: sphinx-gallery writes them with jQuery,
    # DataTables and Bootstrap loaded from CDNs (and a memory column of zeros
    # unless show_memory); the docs load nothing from the network (make docs
    # checks the built HTML with check_offline.py). Each example's page still
    # states its own running time.
    "write_computation_times": False,
    "doc_module": ("sktransfer",),
    "backreferences_dir": "auto_examples/backreferences",
}


def _moved_examples():
    """``plot_x.py`` -> its section folder, for the examples now in sections."""
    root = os.path.join(HERE, "..", "examples")
    return {
        name: section
        for section in sorted(os.listdir(root))
        if os.path.isdir(os.path.join(root, section))
        for name in os.listdir(os.path.join(root, section))
        if name.startswith("plot_") and name.endswith(".py")
    }


def _resolve_old_gallery_ref(app, env, node, contnode):
    """Resolve ``:ref:`sphx_glr_auto_examples_plot_x.py``` (the label before the
    gallery had sections) to the example's label in its section, so pages that
    still use the old label keep building; new text should use the new label."""
    if node.get("refdomain") != "std" or node.get("reftype") != "ref":
        return None
    match = re.fullmatch(r"sphx_glr_auto_examples_(plot_\w+\.py)", node["reftarget"])
    section = match and _moved_examples().get(match.group(1))
    if not section:
        return None
    node["reftarget"] = f"sphx_glr_auto_examples_{section}_{match.group(1)}"
    std = env.get_domain("std")
    return std.resolve_xref(
        env, node["refdoc"], app.builder, "ref", node["reftarget"], node, contnode
    )


warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    message="Matplotlib is currently using agg, which is a non-GUI backend",
)

# ------------------------------------------------------------------ API page
# api.rst is written from the modules' ``__all__`` by _api.py, so every public
# name is documented, in a named group with its import path; a public name in
# no group stops the build (the build also fails if its docstring has a broken
# reference).
write_api_rst(HERE)

# ------------------------------------------------------------------ math, offline
# The docs must build and read without a network, so MathJax 3 is served from
# the built site instead of a CDN. It comes from PyPI, where the ``docs`` extra
# installs it: ``django-static-mathjax`` is MathJax 3.2.2 as static files (plain
# files, no Django needed to read them). Only the parts the pages use are copied:
# the ``tex-chtml`` component, its fonts and the TeX extensions it may autoload.
# (``sphinx.ext.imgmath`` would need LaTeX and dvipng from the system instead.)
MATHJAX_DIR = os.path.join(HERE, "_mathjax")


def _copy_mathjax():
    try:
        import mathjax  # django-static-mathjax
    except ImportError as exc:
        raise RuntimeError(
            "The docs serve MathJax locally; install it with "
            "pip install django-static-mathjax (part of the 'docs' extra: "
            'pip install -e ".[docs]").'
        ) from exc
    es5 = os.path.join(os.path.dirname(mathjax.__file__), "static", "mathjax", "es5")
    out = os.path.join(MATHJAX_DIR, "mathjax")
    if os.path.exists(os.path.join(out, "tex-chtml.js")):
        return
    os.makedirs(out, exist_ok=True)
    shutil.copy2(os.path.join(es5, "tex-chtml.js"), out)
    for sub in ("output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y"):
        src = os.path.join(es5, sub)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(out, sub), dirs_exist_ok=True)


_copy_mathjax()
mathjax_path = "mathjax/tex-chtml.js"

# ------------------------------------------------------------------ performance
# Every measured speed, memory or accuracy figure of the docs lives on one page,
# user_guide/performance.rst, which includes this file: each saved benchmark
# result, verbatim, under the CPU kind its own header records. Rerunning a
# benchmark updates the page; no number is copied into prose.
PERF_INCLUDE = os.path.join(HERE, "_perf", "benchmark_results.inc")


def _cpu_kind(header):
    """The CPU kind a result's header line records, or ``None``."""
    found = []
    model = re.search(
        r"(Xeon|EPYC|Ryzen|Core|Apple M\d|Graviton|Neoverse)[^,;)]*", header
    )
    if model:
        found.append(model.group(0).strip())
    flags = re.search(r"fast bf16 CPU: (True|False)", header)
    if flags:
        found.append(
            "with fast bf16 (AMX / avx512_bf16)"
            if flags.group(1) == "True"
            else "without fast bf16 (no AMX / avx512_bf16)"
        )
    for flag in ("amx_bf16", "avx512_bf16"):
        if flag in header and not flags:
            found.append(f"{flag} present")
    return ", ".join(found) or None


def write_performance_results():
    results = os.path.join(HERE, "..", "benchmarks", "results")
    lines = []
    for name in sorted(os.listdir(results)):
        if not name.endswith(".txt"):
            continue
        with open(os.path.join(results, name)) as f:
            text = f.read().rstrip()
        header = text.splitlines()[0] if text else ""
        kind = _cpu_kind(header)
        title = f"``benchmarks/{name[: -len('.txt')]}.py``"
        if name == "demo.txt":  # saved from `make demo`, not a benchmark script
            title = "``make demo``"
        lines += [title, "-" * len(title), ""]
        lines += [
            f"CPU kind: **{kind}**."
            if kind
            else "CPU kind: *not recorded by this run* (its header names no CPU "
            "model or bf16 support); read only its ratios.",
            "",
            f".. literalinclude:: ../../benchmarks/results/{name}",
            "   :language: text",
            "",
        ]
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(PERF_INCLUDE), exist_ok=True)
    if not os.path.exists(PERF_INCLUDE) or open(PERF_INCLUDE).read() != text:
        with open(PERF_INCLUDE, "w") as f:
            f.write(text)


write_performance_results()

# ------------------------------------------------------------------ HTML
html_theme = "pydata_sphinx_theme"
html_title = f"sktransfer {version}"
html_static_path = ["_static", MATHJAX_DIR]
html_css_files = ["sktransfer.css"]
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False


def setup(app):
    app.connect("missing-reference", _resolve_old_gallery_ref)
