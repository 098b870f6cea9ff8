"""Where and how networks run: device, precision, CPU features, process caches.

One owner for the runtime policy that both image estimators (and the CLI) share:

* :func:`resolve_device` turns ``device="auto"`` into CUDA or the CPU;
* :func:`resolve_precision` / :func:`training_autocast` turn ``precision`` into
  an autocast dtype (``None`` is plain fp32);
* :func:`cpu_has_fast_bf16` reads the CPU's bf16 instructions, and
  :func:`force_cpu_bf16` (or the ``SKTRANSFER_CPU_BF16`` environment variable)
  overrides that detection, so that every code path chosen from it can be
  tested on any machine;
* :func:`process_cache` / :func:`clear_caches`: the process-wide caches (loaded
  networks, inference engines, weight digests, cache indexes) are registered
  here, and one call empties them all.

``precision="auto"`` never trades accuracy for speed on its own: on the CPU it is
fp32 whatever the instructions. bf16 is an explicit choice (its measured cost is
in the estimators' docstrings).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

import torch

__all__ = [
    "clear_caches",
    "cpu_has_fast_bf16",
    "force_cpu_bf16",
    "process_cache",
    "resolve_device",
    "resolve_precision",
    "training_autocast",
]

_ENV_BF16 = "SKTRANSFER_CPU_BF16"
_FORCED = threading.local()
_DETECTED = None
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ------------------------------------------------------------------- CPU features
def _detect_cpu_bf16():
    """True when /proc/cpuinfo lists AMX or AVX-512 bf16 (Linux), else False."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def cpu_has_fast_bf16():
    """True when the CPU runs bf16 natively (AMX or AVX-512 bf16).

    The answer can be forced either way, for tests and benchmarks, with
    :func:`force_cpu_bf16` (this thread) or the environment variable
    ``SKTRANSFER_CPU_BF16=1`` / ``0`` (the whole process).
    """
    forced = getattr(_FORCED, "value", None)
    if forced is not None:
        return forced
    env = os.environ.get(_ENV_BF16, "").strip().lower()
    if env in ("1", "true", "yes"):
        return True
    if env in ("0", "false", "no"):
        return False
    global _DETECTED
    if _DETECTED is None:
        _DETECTED = _detect_cpu_bf16()
    return _DETECTED


@contextlib.contextmanager
def force_cpu_bf16(value):
    """Pretend, inside the block, that the CPU has (or lacks) fast bf16.

    Parameters
    ----------
    value : bool or None
        ``True`` / ``False`` forces the detection; ``None`` restores it.
    """
    old = getattr(_FORCED, "value", None)
    _FORCED.value = None if value is None else bool(value)
    try:
        yield
    finally:
        _FORCED.value = old


# ------------------------------------------------------------- device / precision
def resolve_device(device):
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; validates names."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available here; use device='auto' or "
            f"'cpu'."
        )
    return dev


def resolve_precision(precision, device):
    """Autocast dtype for ``precision`` on ``device`` (``None`` means fp32).

    ``"auto"`` is fp32 on every CPU (bf16 moved EfficientNet-Lite0 codes by 8%
    relative L2 and cost 0.9 points downstream, see the performance guide) and
    bf16 (or fp16 where bf16 is unsupported) autocast on CUDA. ``"bf16"`` is
    honoured everywhere; on a CPU without native bf16 it is emulated and slow, and
    a warning says so.
    """
    if precision in ("fp32", "float32", None):
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if precision in ("bf16", "bfloat16"):
        if device.type == "cpu" and not cpu_has_fast_bf16():
            warnings.warn(
                "precision='bf16' on a CPU without AMX / AVX-512 bf16: bf16 is "
                "emulated here and about 10x slower than fp32. Use precision='auto' "
                "(fp32 on the CPU).",
                UserWarning,
                stacklevel=3,
            )
        return torch.bfloat16
    if precision in ("fp16", "float16"):
        if device.type != "cuda":
            raise ValueError(
                "precision='fp16' needs a CUDA device; use 'bf16' or 'fp32'."
            )
        return torch.float16
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")


def training_autocast(precision, device):
    """Autocast dtype used for training (``None`` is fp32).

    ``"auto"``: bf16 autocast on CUDA when supported, fp32 otherwise and on every
    CPU (bf16 training was 1.7x faster for ResNet-18 but 0.83x for
    EfficientNet-Lite0 on one AMX CPU, and its accuracy cost was not measured:
    ask for it with ``precision="bf16"``).
    """
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return resolve_precision(precision, device)


# ------------------------------------------------------------------ global RNG
#: Held by every section that reads or reseeds torch's global (CPU) RNG on
#: behalf of one computation (a seeded network build, a fit's dropout), so that
#: concurrent fits in threads each get their own reproducible stream.
GLOBAL_RNG_LOCK = threading.RLock()


# ---------------------------------------------------------------- process caches
_REGISTRY = {}
_REGISTRY_LOCK = threading.Lock()


def process_cache(name):
    """The process-wide dict registered under ``name`` (created on first use)."""
    with _REGISTRY_LOCK:
        return _REGISTRY.setdefault(name, {})


def clear_caches():
    """Empty every process-wide cache: networks, engines, digests, indexes.

    The next call rebuilds what it needs; mostly for tests and for freeing
    memory in a long session.
    """
    with _REGISTRY_LOCK:
        for cache in _REGISTRY.values():
            cache.clear()
