"""Where and how networks run: device, precision, CPU features, process caches.

One owner for the runtime policy that both image estimators (and the CLI) share:

* :func:`resolve_device` turns ``device="auto"`` into CUDA or the CPU;
* :func:`resolve_precision` / :func:`training_autocast` turn ``precision`` into
  an autocast dtype (``None`` is plain fp32);
* :func:`cpu_has_fast_bf16` reads the CPU's bf16 instructions, and
  :func:`force_cpu_bf16` (or the ``SKTRANSFER_CPU_BF16`` environment variable)
  overrides that detection, so that every code path chosen from it can be
  tested on any machine;
* :func:`resolve_engine` turns ``engine="auto"`` into ONNX Runtime (fp32 on the
  CPU) or torch (CUDA, reduced precision), and :func:`engine_cache_dir` says
  where exported graphs are kept on disk; :mod:`sktransfer._engine` is the
  mechanism that runs that choice (export, validation, fallbacks with a
  warning). It is a module of its own because it is the heavy half (ONNX
  export, ONNX Runtime sessions) while this module stays a cheap import for
  everything else; it imports this one, never the reverse;
* :func:`keep_freed_memory` tunes glibc's malloc for training on the CPU (once
  per process; ``SKTRANSFER_MALLOC=system`` leaves it alone);
* :func:`seeded_global_rng`: torch's global CPU RNG seeded for one block and
  restored after it;
* :func:`process_cache` / :func:`clear_caches`: the process-wide caches (loaded
  networks, inference engines, ONNX Runtime sessions, weight digests, cache
  indexes) are registered here, and one call empties them all.

``precision="auto"`` never trades accuracy for speed on its own: on the CPU,
codes and predictions are fp32 whatever the instructions, and only the training
steps of a cached fine-tune use bf16 where that was measured faster with the
same accuracy (:func:`training_step_autocast`). bf16 everywhere is an explicit
choice (its measured cost is in the estimators' docstrings).
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
    "engine_cache_dir",
    "force_cpu_bf16",
    "keep_freed_memory",
    "process_cache",
    "resolve_device",
    "resolve_engine",
    "resolve_precision",
    "seeded_global_rng",
    "training_autocast",
    "training_step_autocast",
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
    CPU. On a CPU with native bf16 the training steps of a cached fit differ:
    :func:`training_step_autocast`.
    """
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return resolve_precision(precision, device)


def training_step_autocast(precision, device):
    """Autocast of the training steps alone, or None (they follow ``autocast``).

    ``"auto"`` on a CPU with native bf16 (AMX or AVX-512 bf16; the detection
    is forced either way by :func:`force_cpu_bf16` / ``SKTRANSFER_CPU_BF16``):
    bf16 forward and backward passes, with the depthwise convolutions in fp32
    (:func:`sktransfer._training.depthwise_fp32`), while the cached frozen
    prefix, the head initialisation, the BatchNorm recalibration and every
    prediction stay fp32. On an AMD EPYC with AVX-512 bf16 a training step of
    EfficientNet-Lite0's last stages took 0.82x the channels_last fp32 time
    (all-bf16, depthwise included, took 1.8x), ResNet-18's 0.60x
    (``benchmarks/train_format.py``), and the low-data
    recipe's test accuracy was unchanged (0.803 vs 0.803, 3 seeds; the user
    guide's fine-tuning page). Not measured on AMX. ``"fp32"`` turns it off;
    elsewhere the steps follow :func:`training_autocast`.
    """
    if precision == "auto" and device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def training_channels_last(device):
    """Whether training runs the network in channels_last memory format.

    On every CPU, in fp32 as in bf16: oneDNN's NHWC kernels made a training
    step 1.43x faster for EfficientNet-Lite0's last stages and 1.08x for
    ResNet-18's (``benchmarks/train_format.py``, AMD EPYC with avx512_bf16),
    with the same arithmetic up to summation order. Not on CUDA, where it was
    not measured.
    """
    return device.type == "cpu"


# ------------------------------------------------------------------- allocator
_ENV_MALLOC = "SKTRANSFER_MALLOC"
# glibc mallopt parameters and the values set by keep_freed_memory
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = (
    (_M_MMAP_THRESHOLD, 256 << 20),
    (_M_TRIM_THRESHOLD, 512 << 20),
    (_M_TOP_PAD, 64 << 20),
)
_MALLOC_LOCK = threading.Lock()
_MALLOC_STATE = {"done": False, "tuned": False}


def _glibc_mallopt():
    """glibc's ``mallopt`` through ctypes, or None (another libc, another OS)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory():
    """Make glibc's malloc keep the buffers a CPU training step frees; once.

    Autograd frees every activation and gradient buffer of a step and allocates
    them again in the next. With glibc's defaults, buffers of a few MB are
    ``mmap``-ed and unmapped (or trimmed off the heap) each time, so every step
    faults all their pages in again: a fine-tuning step of EfficientNet-Lite0's
    last stages spent about a fifth of its time there (see the performance
    guide). This sets, process-wide and once, ``M_MMAP_THRESHOLD`` = 256 MiB,
    ``M_TRIM_THRESHOLD`` = 512 MiB and ``M_TOP_PAD`` = 64 MiB: buffers are
    reused from the heap, at the price of keeping up to about half a GiB of
    freed memory in the process (what jemalloc / tcmalloc setups for PyTorch
    training do too). ``SKTRANSFER_MALLOC=system`` in the environment leaves
    the allocator alone. Without glibc (macOS, Windows, musl) nothing happens.

    Returns
    -------
    tuned : bool
        Whether the settings are in effect (from this call or an earlier one).
    """
    with _MALLOC_LOCK:
        if _MALLOC_STATE["done"]:
            return _MALLOC_STATE["tuned"]
        _MALLOC_STATE["done"] = True
        if os.environ.get(_ENV_MALLOC, "").strip().lower() == "system":
            return False
        mallopt = _glibc_mallopt()
        if mallopt is None:
            return False
        _MALLOC_STATE["tuned"] = all(
            mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS
        )
        return _MALLOC_STATE["tuned"]


# ------------------------------------------------------------------ global RNG
#: Held by every section that reads or reseeds torch's global (CPU) RNG on
#: behalf of one computation (a seeded network build, a fit's dropout), so that
#: concurrent fits in threads each get their own reproducible stream.
GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_global_rng(seed):
    """Torch's global CPU RNG seeded with ``seed`` inside the block, restored after.

    For code that can only draw from the global RNG (torchvision transforms, a
    network's random init). Only the CPU generator is seeded and restored:
    ``torch.manual_seed`` would also queue seeds for every accelerator backend
    (CUDA, XPU, MTIA), which costs a formatted stack trace each (about a
    millisecond: it dominated per-image augmentation) and would leave those
    generators reseeded after the block.
    """
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


# --------------------------------------------------------------- library versions
VERSIONED = ("sktransfer", "torch", "torchvision", "timm", "sklearn", "skorch", "numpy")


def library_versions(names=VERSIONED):
    """``{library: version}`` (None when not installed) of what results depend on.

    The one record of versions: reports of ``compare_strategies`` and the
    manifest of :func:`sktransfer.save` both use it.

    Examples
    --------
    >>> from sktransfer._runtime import library_versions
    >>> sorted(library_versions(("torch", "sklearn")))
    ['sklearn', 'torch']
    """
    import importlib

    versions = {}
    for name in names:
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            versions[name] = None
    return versions


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


# ------------------------------------------------------------------------ engines
ENGINES = ("auto", "onnxruntime", "torch")
_ENV_ENGINE = "SKTRANSFER_ENGINE"
_ENV_CACHE = "SKTRANSFER_CACHE_DIR"


def resolve_engine(engine, device, autocast):
    """Which engine runs inference: ``"onnxruntime"`` or ``"torch"``.

    ``"auto"`` is ONNX Runtime on the CPU in fp32 (a graph exported from the
    network: the fastest exact engine measured by
    ``benchmarks/extract_throughput.py``, with codes equal to eager up to float
    rounding and the same downstream accuracy)
    and torch everywhere else: on CUDA (with autocast, channels_last and pinned
    memory) and whenever reduced precision (``autocast`` not None) is asked for,
    which only torch honours. The environment variable ``SKTRANSFER_ENGINE``
    (``torch`` / ``onnxruntime``) overrides what ``"auto"`` means, for tests and
    for comparing engines on one's own data.

    Parameters
    ----------
    engine : {"auto", "onnxruntime", "torch"}
    device : torch.device
    autocast : torch.dtype or None
        The autocast dtype from :func:`resolve_precision` (None is fp32).

    Returns
    -------
    kind : {"onnxruntime", "torch"}
        The preferred engine. Building it may still fall back to torch (export
        failure, disagreement with the network, onnxruntime missing, a CUDA
        device); :mod:`sktransfer._engine` warns when it does.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if engine == "auto":
        forced = os.environ.get(_ENV_ENGINE, "").strip().lower()
        if forced in ("torch", "onnxruntime"):
            engine = forced
        elif forced not in ("", "auto"):
            raise ValueError(
                f"{_ENV_ENGINE}={forced!r}: use 'torch', 'onnxruntime' or 'auto'."
            )
    if autocast is not None:
        if engine == "onnxruntime":
            raise ValueError(
                f"engine='onnxruntime' runs fp32 graphs, but the precision asks "
                f"for {str(autocast).replace('torch.', '')} autocast. Use "
                f"engine='torch' (or 'auto') for reduced precision, or "
                f"precision='fp32'."
            )
        return "torch"
    if engine == "auto":
        return "onnxruntime" if device.type == "cpu" else "torch"
    return engine


def engine_cache_dir():
    """Directory of exported ONNX graphs (created when first written).

    ``$SKTRANSFER_CACHE_DIR/onnx`` when that variable is set, else
    ``$XDG_CACHE_HOME/sktransfer/onnx`` (``~/.cache/sktransfer/onnx``). A graph is
    keyed by the digest of the weights, the requested outputs, the input size and
    the torch / onnx / onnxruntime versions, so a second process, or a later
    run, loads it instead of exporting again.
    """
    from pathlib import Path

    root = os.environ.get(_ENV_CACHE, "").strip()
    if not root:
        base = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
        root = os.path.join(base, "sktransfer")
    return Path(root).expanduser() / "onnx"
