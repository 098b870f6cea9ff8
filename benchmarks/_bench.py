"""What every benchmark script shares: the CPU kind and its printed-and-saved log.

Scripts import it as ``from _bench import Log, cpu_kind`` (``benchmarks/`` is on
``sys.path`` when a script runs from it).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_kind():
    """The CPU's model name and its bf16 instructions, from /proc/cpuinfo.

    e.g. ``"AMD EPYC 9R14, avx512_bf16"``; the docs' performance page reads the
    model and the flags from a result's first line.
    """
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", "x86_64"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"}) or ["no avx512_bf16 / AMX"]
    return f"{name}, {', '.join(bf16)}"


class Log:
    """Lines printed as they come and saved together at the end."""

    def __init__(self):
        self.lines = []

    def say(self, text=""):
        print(text, flush=True)
        self.lines.append(str(text))

    def save(self, name):
        """Write the lines to ``benchmarks/results/<name>``; returns the path."""
        path = RESULTS / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
        return path


def ece(proba, y, bins=15):
    """Expected calibration error of the top-class confidence (15 equal bins):
    the mean over images of |accuracy - confidence| within each bin."""
    conf, pred = proba.max(1), proba.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
