"""The docs state no number that their own run did not print.

Convention for the gallery (``examples/**/plot_*.py``), stated on the gallery's
front page (``docs/gallery_conventions.rst``):

* A conclusion that rests on a measurement is printed by the example, from the
  script's own variables (``print(f"... {gain:+.3f} ...")``), so it is true on
  whatever machine runs it.
* The rST text blocks (the module docstring and the ``# %%`` comment blocks) may
  hold a number only when it is not a result: a value the code of the same file
  sets (a numeric literal of the script: ``max_epochs=3``, ``[:20]``), a fixed
  fact listed in ``FACTS`` below, or text inside inline code (````lr=1e-2````)
  or a role (``:ref:`...```, ``:math:`...```). Decimal numbers and percentages
  are results unless the code sets them (a percentage: as a fraction, so
  "10%" needs a ``0.1`` in the code). Worded magnitudes ("seven points",
  "twice as much", "ten times faster") are results too, and so are worded
  verdicts ("clearly below", "well above", "somewhat differently"): what a
  run measured is printed by the run, and the prose says how to read it.

The rST pages (``docs/**/*.rst``) hold no measured speed or memory figure:
those live in ``benchmarks/results/*.txt``, shown on the performance page.

Static checks only (no example is run), so the test is fast.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").rglob("plot_*.py"))

# Numbers that are facts of the data or of the weights, true on any machine.
FACTS = {
    1000: "ImageNet's 1,000 classes; the bundled test subset's 1,000 images",
    224: "the input size the ImageNet weights were trained at",
    28: "Fashion-MNIST and MNIST images are 28x28",
    8: "scikit-learn's digits are 8x8",
    10: "Fashion-MNIST and the digits have 10 classes",
    1280: "the width of EfficientNet-Lite0's penultimate codes",
    0.95: "the default confidence level of summarize_scores (95%)",
}

# Examples owned by another branch whose prose is being rewritten there; each
# entry must be removed once that page passes (the xfail is strict).
PENDING = {}

NUMBER_WORDS = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|"
    r"twenty|thirty|forty|fifty|hundred|a few|several|a dozen"
)
# A worded magnitude of a result: "seven points", "twice as", "ten times faster".
WORDED = re.compile(
    rf"\b(?:(?:twice|thrice) (?:as|the)|half as|"
    rf"(?:{NUMBER_WORDS}) (?:percentage )?points?\b|"
    rf"(?:{NUMBER_WORDS}) percent|(?:{NUMBER_WORDS}) times (?:as|more|less|"
    r"better|worse|faster|slower|larger|smaller|longer|shorter|higher|lower))",
    re.IGNORECASE,
)
# A worded verdict on a result: "clearly below", "well above", "scores somewhat
# differently" (issue 25's contradictions were such sentences beside printed
# numbers that said otherwise).
VERDICT = re.compile(
    r"\b(?:clearly|significantly|markedly|substantially|consistently|far|well|"
    r"much|somewhat|slightly)\s+(?:below|above|better|worse|higher|lower|ahead|"
    r"behind|differently|beats?|wins?|outperforms?|loses?)\b",
    re.IGNORECASE,
)
# A number standing alone: not part of a name (Lite0, L1, blocks.4, ResNet-18).
NUMBER = re.compile(
    r"(?<![A-Za-z_.\d])(?<![A-Za-z]-)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s?%)?"
    r"(?![A-Za-wyzA-Z_\d])"
)
# Inline code, roles and targets carry no prose numbers.
MASKED = re.compile(r"``.*?``|:\w+:`[^`]*`|`[^`]*`_{1,2}", re.DOTALL)


def text_blocks(path):
    """(first line, text) of each rST block of a sphinx-gallery script."""
    source = path.read_text()
    tree = ast.parse(source)
    blocks = []
    doc = ast.get_docstring(tree, clean=False)
    if doc:
        blocks.append((1, doc))
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("# %%"):
            start, body = i + 2, []
            i += 1
            while i < len(lines) and lines[i].startswith("#"):
                body.append(lines[i][2:] if lines[i].startswith("# ") else "")
                i += 1
            blocks.append((start, "\n".join(body)))
        else:
            i += 1
    return blocks


def code_numbers(path):
    """Every numeric literal the script's code sets, as floats."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            found.add(float(node.value))
    return found


def stray_numbers(text, allowed):
    """Numbers and worded magnitudes in ``text`` that are not allowed."""
    text = MASKED.sub(" ", text)
    text = re.sub(r"(?m)^\s*\d+\.\s", " ", text)  # enumerated-list markers
    text = re.sub(r"(\d)x(?=\d)", r"\1 x ", text)  # 28x28, 64x4x4
    bad = [m.group(0) for m in WORDED.finditer(text)]
    bad += [m.group(0) for m in VERDICT.finditer(text)]
    for m in NUMBER.finditer(text):
        whole, frac, percent = m.groups()
        value = float(whole.replace(",", "") + (frac or ""))
        if (value / 100 if percent else value) not in allowed:
            bad.append(m.group(0).strip())
    return bad


def check_example(path):
    allowed = code_numbers(path) | {float(k) for k in FACTS}
    problems = []
    for line, text in text_blocks(path):
        for bad in stray_numbers(text, allowed):
            problems.append(f"{path.name}: block at line {line}: {bad!r}")
    return problems


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            p,
            id=p.name,
            marks=[pytest.mark.xfail(strict=True, reason=PENDING[p.name])]
            if p.name in PENDING
            else [],
        )
        for p in EXAMPLES
    ],
)
def test_gallery_prose_states_only_printed_numbers(path):
    problems = check_example(path)
    assert not problems, (
        "A gallery text block states numbers its run does not print; print the "
        "conclusion from the script's variables instead:\n" + "\n".join(problems)
    )


def test_the_check_catches_stale_conclusions(tmp_path):
    """The contradictions reported in issue 15 would have failed the check."""
    example = tmp_path / "plot_stale.py"
    example.write_text(
        '"""Title\n=====\n\nTrains for ``max_epochs=3`` epochs."""\n'
        "clf = make(max_epochs=3, input_size=64)\n"
        "# %%\n"
        "# What we see\n"
        "# ------------\n"
        "# The last four stages won (0.635); restoring the best epoch is worth\n"
        "# seven points, and (d) gains about twice as much as (c). Block 4 is\n"
        "# about ten points better at 64 px, 96-97% of shoes, after epoch 6.\n"
        "print(f'{score:.3f}')\n"
    )
    found = check_example(example)
    for stale in ("0.635", "seven points", "twice as", "ten points", "97%", "6"):
        assert any(repr(stale) in p for p in found), (stale, found)
    # ... and allows what the code sets or inline code shows.
    assert not any("'64'" in p or "'3'" in p for p in found), found


def test_the_check_catches_issue_25_verdicts(tmp_path):
    """The two gallery contradictions of issue 25, as their text read: a verdict
    in the prose beside a printed line that said the opposite."""
    example = tmp_path / "plot_verdicts.py"
    example.write_text(
        '"""Title\n=====\n"""\n'
        "print(f'changed the score by {d:+.3f}' + ' (within the spread)')\n"
        "# %%\n"
        "# How to read the control. When the control\n"
        "# scores clearly below the probe, as the line above reports, the cost is the\n"
        "# BatchNorm mode, not the weights.\n"
        "# %%\n"
        "# ``fit`` recomputes exact statistics for the restored\n"
        "# weights at the end, so the returned model then scores somewhat differently\n"
        "# from what the history recorded for its epoch.\n"
    )
    found = check_example(example)
    assert any("'clearly below'" in p for p in found), found
    assert any("'somewhat differently'" in p for p in found), found
    # ... while saying how to read a printed verdict is allowed
    example.write_text(
        '"""Title\n=====\n"""\n'
        "# %%\n"
        "# The line above says whether the difference is within the spread.\n"
    )
    assert check_example(example) == []


def test_the_check_allows_settings_and_names(tmp_path):
    example = tmp_path / "plot_ok.py"
    example.write_text(
        '"""Title\n=====\n\nEfficientNet-Lite0 and ResNet-18, L1 vs L2, 28x28."""\n'
        "x = 20\n"
        "# %%\n"
        "# Notes\n"
        "# -----\n"
        "# With 20 images per class, ``blocks.4`` and :ref:`ex <sphx_glr_1.py>`;\n"
        "# ImageNet has 1,000 classes, see :math:`\\lambda \\|w\\|_2^2`.\n"
    )
    assert check_example(example) == []


# ----------------------------------------------------------------- rST pages
MEASURED = re.compile(
    r"\d+(?:\.\d+)?\s*(?:img/s|images/s|it/s|MiB|GiB)\b|\b\d+(?:\.\d+)?x\b(?! ?\d)"
)


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in sorted((ROOT / "docs").rglob("*.rst"))
        if not {"_build", "auto_examples", "generated"} & set(p.parts)
    ],
    ids=lambda p: str(p.relative_to(ROOT / "docs")),
)
def test_rst_pages_repeat_no_benchmark_figures(path):
    text = MASKED.sub(" ", path.read_text())
    # code blocks hold code, not measurements
    text = re.sub(r"::\n\n(?:[ \t]+.*\n|\n)+", "::\n\n", text)
    found = MEASURED.findall(text)
    assert not found, (
        f"{path.name} states measured speed/memory figures {found}; they live in "
        "benchmarks/results/*.txt, shown on the performance page: refer to it."
    )


# ------------------------------------------------------- the README's demo
def _readme_demo_section():
    text = (ROOT / "README.md").read_text()
    start = text.index("## The two commands")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_demo_is_the_saved_run():
    """The README's ``make demo`` output is ``benchmarks/results/demo.txt``'s, line
    for line, from the command the Makefile runs; every number its prose states
    is one that run printed."""
    saved = (ROOT / "benchmarks" / "results" / "demo.txt").read_text()
    section = _readme_demo_section()
    block = re.search(r"```text\n(.*?)```", section, re.DOTALL).group(1)
    table = [line for line in block.splitlines() if "..." not in line]
    assert table and all(line in saved.splitlines() for line in table), (
        "README's demo output differs from benchmarks/results/demo.txt"
    )
    assert any(line.split()[1:2] == ["finetune_defaults"] for line in table)
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    options = re.sub(r"\s*\\\n\s*", " ", recipe).split("compare ", 1)[1]
    options = options.split(" --out")[0].strip()
    assert options in re.sub(r"\s+", " ", section), options
    prose = section.replace(block, " ")
    for number in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose):
        assert number in saved, f"README states {number}, which the demo run did not"
