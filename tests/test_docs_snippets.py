"""Every Python snippet of the user guide runs as shown.

The ``.. code-block:: python`` blocks of ``docs/user_guide/*.rst``,
``docs/getting_started.rst`` and ``docs/index.rst`` run in order, one namespace
per page (a later block may use what an earlier one defined, as a reader
running them in order would), in an empty working directory; ``>>>`` blocks
run as doctests. A block whose first line is a comment saying it ``needs the
network`` is not run (no test touches the network); every other block is.

Real weights (EfficientNet-Lite0, shipped offline) and the bundled
Fashion-MNIST sample: marked slow.
"""

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [DOCS / "index.rst", DOCS / "getting_started.rst"] + sorted(
    (DOCS / "user_guide").glob("*.rst")
)
BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: (?:python|pycon)[ \t]*\n")
NEEDS_NETWORK = re.compile(r"^#.*needs the network", re.IGNORECASE)


def snippets(path):
    """``(line, code)`` of each Python code block of an rST page, dedented."""
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        m = BLOCK.match(lines[i] + "\n")
        if not m:
            i += 1
            continue
        indent = len(m.group("indent").expandtabs())
        i += 1
        while i < len(lines) and lines[i].lstrip().startswith(":"):  # options
            i += 1
        body, start = [], i + 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        text = "\n".join(body).strip("\n")
        width = min(len(x) - len(x.lstrip()) for x in text.splitlines() if x.strip())
        code = "\n".join(x[width:] for x in text.splitlines())
        found.append((start, code))
    return found


def runnable(code):
    return not NEEDS_NETWORK.match(code.lstrip())


def run_page(path, namespace):
    for line, code in snippets(path):
        if not runnable(code):
            continue
        name = f"{path.relative_to(ROOT)}:{line}"
        if code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(code, namespace, name, name, 0)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            result = runner.run(test, clear_globs=False)
            assert result.failed == 0, f"doctest {name} failed (output above)"
        else:
            exec(compile(code, name, "exec"), namespace)


def test_snippets_are_found_and_marked():
    """The extraction sees the blocks the pages hold, and every block that is
    not run says why (it needs the network)."""
    found = {p.name: snippets(p) for p in PAGES}
    assert len(found["getting_started.rst"]) == 3
    assert any(">>>" in code for _, code in found["inputs.rst"])
    skipped = [c for blocks in found.values() for _, c in blocks if not runnable(c)]
    assert skipped and all("needs the network" in c.splitlines()[0] for c in skipped)
    # backbones.rst's indented blocks (inside a list) are found too
    assert sum(not runnable(c) for _, c in found["backbones.rst"]) >= 3


@pytest.fixture
def reader_dir(tmp_path, monkeypatch):
    """An empty working directory, holding only the image folder that
    getting_started's folder snippet names (``path/to/root``, two classes)."""
    from PIL import Image

    from sktransfer.datasets import load_fashion_mnist_sample

    X, y = load_fashion_mnist_sample(subset="test", return_X_y=True)
    for label in (0, 1):
        folder = tmp_path / "path" / "to" / "root" / f"class_{label}"
        folder.mkdir(parents=True)
        for k in np.flatnonzero(y == label)[:3]:
            Image.fromarray(X[k]).save(folder / f"{k}.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [p for p in PAGES if any(runnable(c) for _, c in snippets(p))],
    ids=lambda p: str(p.relative_to(DOCS)),
)
def test_page_snippets_run_as_shown(path, reader_dir):
    run_page(path, {"__name__": "__docs__"})
