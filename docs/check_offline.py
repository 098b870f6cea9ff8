"""Fail when a built HTML page loads a script or a stylesheet from the network.

Run by ``make html`` after the build: ``python check_offline.py _build/html``.
A ``<script src>`` or ``<link href>`` (stylesheets, fonts, preloads) that starts
with ``http://``, ``https://`` or ``//`` makes a page fetch from a CDN when it is
read; ordinary hyperlinks (``<a href>``) are not loads and are allowed.
"""

import re
import sys
from pathlib import Path

# A tag that loads what it names, and the attribute that names it.
LOADS = re.compile(
    r"<(?P<tag>script|link|img|iframe)\b[^>]*?\b(?P<attr>src|href)\s*=\s*"
    r"(?P<q>[\"']?)(?P<url>(?:https?:)?//[^\"'\s>]+)",
    re.IGNORECASE,
)


def network_loads(root):
    """``[(page, tag, url)]`` for every network load in the HTML under ``root``."""
    found = []
    for page in sorted(Path(root).rglob("*.html")):
        for m in LOADS.finditer(page.read_text(encoding="utf-8", errors="replace")):
            tag = m.group("tag").lower()
            if tag == "link" or m.group("attr").lower() == "src":
                found.append((str(page.relative_to(root)), tag, m.group("url")))
    return found


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python check_offline.py BUILT_HTML_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    pages = list(root.rglob("*.html"))
    if not pages:
        print(f"check_offline: no HTML pages under {root}", file=sys.stderr)
        return 2
    found = network_loads(root)
    for page, tag, url in found:
        print(f"{page}: <{tag}> loads {url} from the network", file=sys.stderr)
    if found:
        print(
            f"check_offline: {len(found)} network load(s); serve the file from "
            "_static (as MathJax is) or stop the extension writing it",
            file=sys.stderr,
        )
        return 1
    print(f"check_offline: {len(pages)} pages load nothing from the network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
