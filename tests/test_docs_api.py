"""The API index, the docstrings it renders, and what the built pages may load.

Static checks (no docs build, no network): every public name sits in a named
group of the API page under an import path that works; every parameter of the
public API is described (numpydoc PR01 / PR02, the checks the docs build runs);
the guides name no private module; ``getting_started`` describes the command
``make demo`` runs; and ``docs/check_offline.py``, which ``make docs`` runs on
the built HTML, catches a page that loads a script or stylesheet from a CDN.
"""

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api = _load("_api")
check_offline = _load("check_offline")


# ------------------------------------------------------------------ API index
def test_every_public_name_is_in_a_named_group():
    assert api.unplaced() == []
    titles = [title for title, _, _ in api.API_SECTIONS]
    assert "Other" not in titles and len(set(titles)) == len(titles)
    for wanted in ("Persistence", "Export", "Splitters", "Callbacks"):
        assert wanted in titles
    # data (constants, registries) has no page: its group's text names it
    text = api.api_rst()
    for module_name in api.PUBLIC_MODULES:
        for name, kind in api.public_names(module_name).items():
            if kind is None:
                assert f"{module_name}.{name}" in text, f"{module_name}.{name}"


def test_the_index_shows_import_paths_that_import():
    text = api.api_rst()
    listed = re.findall(r"^   (sktransfer[\w.]*)\.(\w+)$", text, re.MULTILINE)
    assert len(listed) == len(set(listed)) > 20
    for module_name, name in listed:
        module = importlib.import_module(module_name)
        assert hasattr(module, name), f"{module_name}.{name} is not importable"
    for module_name, name in [
        ("sktransfer.model_selection", "EpisodicSplit"),
        ("sktransfer.model_selection", "ClassDisjointSplit"),
        ("sktransfer.callbacks", "WeightTracker"),
        ("sktransfer", "save"),
        ("sktransfer", "load"),
        ("sktransfer", "export_onnx"),
    ]:
        assert (module_name, name) in listed


def test_unplaced_names_a_new_public_name(monkeypatch):
    """A name added to an ``__all__`` without a group is reported (and stops
    the docs build), instead of landing under a catch-all heading."""
    import sktransfer.callbacks as callbacks

    def stray(net):
        """A callback helper nobody filed."""

    monkeypatch.setattr(callbacks, "stray", stray, raising=False)
    monkeypatch.setattr(callbacks, "__all__", [*callbacks.__all__, "stray"])
    # a group listing its names (not "all of the module") misses the new one
    sections = [
        (title, what, [(m, ["WeightTracker"] if m == "sktransfer.callbacks" else n)
                       for m, n in parts])
        for title, what, parts in api.API_SECTIONS
    ]  # fmt: skip
    monkeypatch.setattr(api, "API_SECTIONS", sections)
    assert api.unplaced() == ["sktransfer.callbacks.stray"]
    with pytest.raises(RuntimeError, match="no group"):
        api.api_rst()


# ------------------------------------------------------------------ numpydoc
def _public_objects():
    seen, names = set(), []
    for module_name in api.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name, kind in api.public_names(module_name).items():
            obj = getattr(module, name)
            if kind is None or id(obj) in seen:
                continue
            seen.add(id(obj))
            names.append(f"{module_name}.{name}")
            if inspect.isclass(obj):
                for attr, value in inspect.getmembers(obj):
                    if attr.startswith("_"):
                        continue
                    if inspect.isfunction(value) or isinstance(value, property):
                        names.append(f"{module_name}.{name}.{attr}")
    return [n for n in names if not any(re.search(p, n) for p in api.NUMPYDOC_EXCLUDE)]


def test_every_parameter_is_described():
    validate = pytest.importorskip("numpydoc.validate").validate
    problems = []
    for name in _public_objects():
        for code, message in validate(name)["errors"]:
            if code in api.NUMPYDOC_CHECKS:
                problems.append(f"{name}: {code} {message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "name", ["label_smoothing", "validation_fraction", "patience", "monitor", "device"]
)
def test_finetuned_classifier_parameters_have_descriptions(name):
    """The rendered docstring (``{{params: ...}}`` lines filled in) describes
    them: the issue found them listed without a word."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    from sktransfer import FineTunedClassifier

    params = {p.name: p for p in docscrape.ClassDoc(FineTunedClassifier)["Parameters"]}
    assert " ".join(params[name].desc).strip(), name


def test_lp_ft_names_the_linear_probe_start_only():
    """LP-FT (Kumar et al. 2022) is ``head_init="lp"``; ``freeze_epochs`` are
    head-first epochs, and its description says it is not LP-FT."""
    from sktransfer._finetune_docs import PARAM_DOCS

    freeze = PARAM_DOCS["freeze_epochs"]
    assert "Head-first epochs" in freeze and "Not LP-FT" in freeze
    # the names the issue found calling the head-first epochs "LP-FT"
    for path in [ROOT / "sktransfer" / "_finetune.py", ROOT / "benchmarks" /
                 "fashion_lowdata.py"]:  # fmt: skip
        text = path.read_text()
        assert "LP-FT's head-only" not in text and "head first: LP-FT" not in text


# ------------------------------------------------------------------ the guides
GUIDE_PAGES = [
    p
    for p in sorted(DOCS.rglob("*.rst"))
    if not {"_build", "auto_examples", "generated"} & set(p.parts)
]
PRIVATE = re.compile(
    r"\bsktransfer\._\w+|(?<![\w.])_(?:runtime|activations|training)\."
)


@pytest.mark.parametrize("path", GUIDE_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_guides_name_no_private_module(path):
    found = PRIVATE.findall(path.read_text())
    assert not found, (
        f"{path.name} names private {found}: give the public route "
        "(a parameter, policy_, `sktransfer info`) or describe the behaviour"
    )


def test_glossary_defines_the_terms_the_guides_use():
    text = (DOCS / "glossary.rst").read_text()
    terms = set(re.findall(r"^   (\S.*)$", text, re.MULTILINE))
    for term in [
        "passes",
        "recipe fits",
        "prefix forwards",
        "cut",
        "units",
        "stores",
        "activation cache",
        "CNN codes",
        "views",
        "TTA",
        "temperature scaling",
        "ECE",
        "anatomy",
        "backbone family",
        "LP-FT",
        "head-first epochs",
    ]:
        assert term in terms, term
    sources = (DOCS / "techniques.rst").read_text()
    assert ".. [Kumar2022]" in sources and ".. [Guo2017]" in sources


def _demo_command():
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    command = re.sub(r"\s*\\\n\s*", " ", recipe).split("-m sktransfer ", 1)[1]
    return command.strip()


def test_getting_started_describes_what_make_demo_runs():
    text = re.sub(r"\s+", " ", (DOCS / "getting_started.rst").read_text())
    command = _demo_command()
    assert f"sktransfer {command}" in text, command
    per_class = int(re.search(r"--per-class (\d+)", command).group(1))
    folds = int(re.search(r"--cv (\d+)", command).group(1))
    out = re.search(r"--out (\S+)", command).group(1)
    assert f"{per_class} images per class ({per_class * 10} images" in text
    assert f"{folds}-fold" in text and f"``{out}/``" in text
    for column in ("rank", "strategy", "score", "size", "time s", "settings"):
        assert f"``{column}``" in text, column


# ------------------------------------------------------------------ offline pages
def test_check_offline_finds_cdn_scripts_and_styles(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<link rel="stylesheet" href="_static/theme.css">'
        '<script src="_static/mathjax/tex-chtml.js"></script>'
        '<a href="https://example.org/paper">a paper</a>'
    )
    assert check_offline.network_loads(tmp_path) == []
    assert check_offline.main([str(tmp_path)]) == 0
    (tmp_path / "sub" / "times.html").write_text(
        '<link href="https://cdn.datatables.net/1.13.6/css/x.css" rel="stylesheet" />'
        "<script src='//code.jquery.com/jquery-3.7.0.js'></script>"
        '<script type="text/javascript" src="http://cdn.example/x.js"></script>'
    )
    found = check_offline.network_loads(tmp_path)
    assert [(page, tag) for page, tag, _ in found] == [
        ("sub/times.html", "link"),
        ("sub/times.html", "script"),
        ("sub/times.html", "script"),
    ]
    assert check_offline.main([str(tmp_path)]) == 1
    assert "code.jquery.com" in capsys.readouterr().err
