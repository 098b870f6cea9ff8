"""What every benchmark script shares: the CPU kind and its printed-and-saved log.

Scripts import it as ``from _bench import Log, cpu_kind`` (``benchmarks/`` is on
``sys.path`` when a script runs from it).
"""

from __future__ import annotations

import platform
from pathlib import Path

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
