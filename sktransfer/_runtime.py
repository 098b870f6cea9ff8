"""Where and how networks run: device, precision, CPU kind, engines, process state.

One owner for the runtime decisions that the estimators, the CLI and reports
share. They are made once per fit / transform / predict into a frozen
:class:`RuntimePolicy` (:func:`resolve_policy`) that every other module reads:

* :func:`resolve_device` turns ``device="auto"`` into CUDA or the CPU;
* :func:`resolve_precision` turns ``precision`` into an inference autocast
  dtype (``None`` is plain fp32);
* :func:`cpu_kind` names the CPU (:data:`CPU_KINDS`: AMX, AVX-512 bf16,
  AVX-512, AVX2, other) and :data:`CPU_RULES` says what ``"auto"`` picks on
  each kind (bf16 training steps, memory format) and where it was measured; a
  kind nobody measured gets fp32 and torch's default memory format.
  :func:`force_cpu_kind` / :func:`force_cpu_bf16` and the environment
  variables ``SKTRANSFER_CPU_KIND`` / ``SKTRANSFER_CPU_BF16`` force the
  detection, so that every branch can be tested on any machine;
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
* :func:`process_cache` / :func:`clear_caches`: ALL process-wide state (loaded
  networks, inference engines, ONNX Runtime sessions, weight digests, cache
  indexes, counters, the CPU detection) is registered here, and one call
  empties it; :func:`named_lock` holds the locks, which are never dropped.

``precision="auto"`` never trades accuracy for speed on its own: on the CPU,
codes and predictions are fp32 whatever the instructions, and only the training
steps of a cached fine-tune use bf16, on the CPU kinds where that was measured
faster with the same accuracy (:data:`CPU_RULES`). bf16 everywhere is an
explicit choice (its measured cost is in the estimators' docstrings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import warnings

import torch

__all__ = [
    "CPU_KINDS",
    "CPU_RULES",
    "CpuRules",
    "RuntimePolicy",
    "clear_caches",
    "cpu_has_fast_bf16",
    "cpu_kind",
    "cpu_rules",
    "dtype_name",
    "engine_cache_dir",
    "force_cpu_bf16",
    "force_cpu_kind",
    "keep_freed_memory",
    "named_lock",
    "process_cache",
    "resolve_device",
    "resolve_engine",
    "resolve_policy",
    "resolve_precision",
    "seeded_global_rng",
]

_ENV_BF16 = "SKTRANSFER_CPU_BF16"
_ENV_KIND = "SKTRANSFER_CPU_KIND"
_FORCED = threading.local()
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: CPU kinds, from the most capable down: the rules below are chosen per kind.
CPU_KINDS = ("amx", "avx512_bf16", "avx512", "avx2", "other")


# ------------------------------------------------------------------- CPU features
def _kind_from_flags(flags):
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def _detect_cpu_kind():
    """The kind of this CPU: /proc/cpuinfo's flags (Linux), else torch's ISA."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return _kind_from_flags(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", ...
    return capability if capability in ("avx512", "avx2") else "other"


def detected_cpu_kind():
    """This machine's CPU kind, whatever is forced (read once per process)."""
    state = process_cache("cpu")
    if "kind" not in state:
        state["kind"] = _detect_cpu_kind()
    return state["kind"]


def cpu_kind():
    """The CPU kind that the CPU-dependent rules read: one of :data:`CPU_KINDS`.

    Detected from the CPU's flags, and forced, for tests and benchmarks on any
    machine, by (first match wins):

    * :func:`force_cpu_kind` / :func:`force_cpu_bf16` (this thread);
    * ``SKTRANSFER_CPU_KIND=amx|avx512_bf16|avx512|avx2|other``;
    * ``SKTRANSFER_CPU_BF16=1`` (the kind ``"avx512_bf16"``: native bf16, and
      the rules measured for it) or ``=0`` (the detected kind without bf16:
      ``"avx512"`` on an AVX-512 CPU).
    """
    forced = getattr(_FORCED, "kind", None)
    if forced is not None:
        return forced
    env = os.environ.get(_ENV_KIND, "").strip().lower()
    if env:
        if env not in CPU_KINDS:
            raise ValueError(f"{_ENV_KIND}={env!r}: use one of {CPU_KINDS}.")
        return env
    kind = detected_cpu_kind()
    bf16 = os.environ.get(_ENV_BF16, "").strip().lower()
    if bf16 in ("1", "true", "yes"):
        return "avx512_bf16"
    if bf16 in ("0", "false", "no"):
        return _without_bf16(kind)
    return kind


def _without_bf16(kind):
    return "avx512" if kind in ("amx", "avx512_bf16") else kind


def cpu_has_fast_bf16():
    """True when the CPU (kind) runs bf16 natively: AMX or AVX-512 bf16."""
    return cpu_kind() in ("amx", "avx512_bf16")


@contextlib.contextmanager
def force_cpu_kind(kind):
    """Pretend, inside the block (this thread), that the CPU is of ``kind``.

    Parameters
    ----------
    kind : str or None
        One of :data:`CPU_KINDS`; ``None`` restores the detection.
    """
    if kind is not None and kind not in CPU_KINDS:
        raise ValueError(f"kind must be one of {CPU_KINDS} or None, got {kind!r}.")
    old = getattr(_FORCED, "kind", None)
    _FORCED.kind = kind
    try:
        yield
    finally:
        _FORCED.kind = old


def force_cpu_bf16(value):
    """Pretend, inside the block, that the CPU has (or lacks) fast bf16.

    ``True`` is the kind ``"avx512_bf16"``, ``False`` the detected kind without
    bf16, ``None`` the detection (see :func:`cpu_kind`).
    """
    if value is None:
        return force_cpu_kind(None)
    with force_cpu_kind(None):  # the detected kind, not an outer forcing
        kind = "avx512_bf16" if value else _without_bf16(detected_cpu_kind())
    return force_cpu_kind(kind)


# ------------------------------------------------------------ rules by CPU kind
@dataclasses.dataclass(frozen=True)
class CpuRules:
    """What ``"auto"`` chooses on one CPU kind, and where it was measured.

    Attributes
    ----------
    bf16_steps : bool
        Run the training steps of a cached fine-tune in bf16 autocast.
    channels_last : bool
        Train (and run eager inference) in channels_last memory format.
    measured : str
        Where the choice was measured; ``""`` for torch's defaults (fp32, NCHW)
        on a kind nobody measured.
    """

    bf16_steps: bool = False
    channels_last: bool = False
    measured: str = ""


#: One entry per CPU kind; kinds not listed get ``CpuRules()`` (fp32, NCHW).
CPU_RULES = {
    # benchmarks/train_format.py: channels_last made a training step of
    # EfficientNet-Lite0's last stages 1.43x and ResNet-18's 1.08x faster in
    # fp32, bf16 steps (depthwise convolutions fp32) 1.23x / 1.66x faster
    # again; bf16 steps kept the low-data accuracy (fine-tuning guide).
    "avx512_bf16": CpuRules(
        bf16_steps=True, channels_last=True, measured="2-core AMD EPYC"
    ),
    # bf16 steps on a 2-core Xeon with AMX: 0.89x the fp32 time but 0.5 points
    # lower over 3 samples, and a NaN loss (a oneDNN bf16 weight-gradient bug,
    # since worked around: _training.bf16_unsafe_convs). Not shown
    # accuracy-neutral there: fp32. The memory format was not measured there.
    "amx": CpuRules(measured="2-core Intel Xeon with AMX (bf16 steps only)"),
}


def cpu_rules(kind=None):
    """The :class:`CpuRules` of ``kind`` (default: :func:`cpu_kind`)."""
    return CPU_RULES.get(cpu_kind() if kind is None else kind, CpuRules())


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
    """Autocast dtype for inference with ``precision`` on ``device`` (None: fp32).

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
                stacklevel=4,
            )
        return torch.bfloat16
    if precision in ("fp16", "float16"):
        if device.type != "cuda":
            raise ValueError(
                "precision='fp16' needs a CUDA device; use 'bf16' or 'fp32'."
            )
        return torch.float16
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")


def dtype_name(dtype):
    """``"fp32"`` (for None), ``"bf16"`` or ``"fp16"``: how reports name a dtype."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


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
    state = process_cache("malloc")  # after clear_caches: set again (idempotent)
    with _MALLOC_LOCK:
        if "tuned" not in state:
            state["tuned"] = _tune_malloc()
        return state["tuned"]


def _tune_malloc():
    if os.environ.get(_ENV_MALLOC, "").strip().lower() == "system":
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


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


def process_cache(name, factory=dict):
    """The process-wide dict registered under ``name`` (created on first use).

    ``factory`` makes it (a dict subclass such as ``collections.Counter``).
    """
    with _REGISTRY_LOCK:
        cache = _REGISTRY.get(name)
        if cache is None:
            cache = _REGISTRY[name] = factory()
        return cache


def clear_caches():
    """Empty every process-wide cache: networks, engines, digests, indexes.

    The next call rebuilds what it needs; mostly for tests and for freeing
    memory in a long session. Locks (:func:`named_lock`) are not caches and
    stay: a lock dropped while an export holds it would let a second export of
    the same graph start.
    """
    with _REGISTRY_LOCK:
        for cache in _REGISTRY.values():
            cache.clear()


_LOCKS = {}


def named_lock(key):
    """The process's one lock for ``key`` (hashable), created on first use.

    For work that must run once per key even from several threads (exporting
    one graph, building one shared engine). Never cleared by
    :func:`clear_caches`.
    """
    with _REGISTRY_LOCK:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.Lock()
        return lock


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


# ----------------------------------------------------------------- the policy
#: Fine-tuned predictions: exporting the network to ONNX costs seconds, worth
#: it with ``engine="auto"`` from this many images in one call on.
ENGINE_MIN_IMAGES = 256
#: Activation cache: from this many prefix forwards on (images x views), a CPU
#: fp32 prefix runs on ONNX Runtime (the export costs seconds once, then the
#: graph is on disk), checked against eager on a probe batch. Fewer forwards run
#: eagerly, bit for bit as the uncached fit would.
TRACE_MIN_FORWARDS = 256


@dataclasses.dataclass(frozen=True)
class RuntimePolicy:
    """How one fit, transform or predict runs: resolved once, read everywhere.

    Built by :func:`resolve_policy` from the estimator's ``device``,
    ``precision`` and ``engine`` and from the CPU kind; every layer (the
    training loop, the activation cache, the inference engines, persistence,
    reports) reads its decisions from here instead of deriving them again.

    Attributes
    ----------
    device : torch.device
    precision : str
        The ``precision`` asked for.
    cpu_kind : str or None
        :func:`cpu_kind` on the CPU, None on CUDA.
    autocast : torch.dtype or None
        Inference (codes, predictions) and the activation cache's frozen
        prefix; None is fp32.
    train_autocast : torch.dtype or None
        Forward and backward passes of training through the whole network.
    step_autocast : torch.dtype or None
        Training steps of a cached fine-tune (the units after the cut), where
        they differ from ``train_autocast``: bf16 on a CPU kind whose
        :class:`CpuRules` say so.
    channels_last : bool
        Memory format of training and of eager (torch) inference.
    engine : {"onnxruntime", "torch"}
        The preferred inference engine (:func:`resolve_engine`).
    engine_min_images : int
        With ``engine="auto"``, fine-tuned predictions switch to ONNX Runtime
        from a call on this many images on.
    trace_min_forwards : int
        The activation cache runs its prefix on ONNX Runtime from this many
        forwards on (CPU, fp32 only).
    threads : int
        torch's intra-op threads when the policy was resolved; ONNX Runtime
        sessions use as many.
    """

    device: torch.device
    precision: str = "auto"
    cpu_kind: str | None = None
    autocast: torch.dtype | None = None
    train_autocast: torch.dtype | None = None
    step_autocast: torch.dtype | None = None
    channels_last: bool = False
    engine: str = "torch"
    engine_min_images: int = ENGINE_MIN_IMAGES
    trace_min_forwards: int = TRACE_MIN_FORWARDS
    threads: int = 1

    def report(self):
        """The decisions as plain strings, for ``policy_`` and reports."""
        steps = self.step_autocast or self.train_autocast
        return {
            "device": str(self.device),
            "cpu_kind": self.cpu_kind or "-",
            "inference": dtype_name(self.autocast),
            "training": dtype_name(self.train_autocast),
            "cached steps": dtype_name(steps),
            "memory_format": (
                "channels_last" if self.channels_last else "contiguous (NCHW)"
            ),
            "engine": self.engine,
            "threads": str(self.threads),
        }


def resolve_policy(device="auto", precision="auto", engine="auto"):
    """The :class:`RuntimePolicy` for these settings on this machine, now.

    Validates the three values (a ``ValueError`` names a bad one). Every
    CPU-dependent choice is a rule of the CPU kind (:data:`CPU_RULES`), never
    a timing taken at run time, so a seeded fit is reproducible on one
    machine.

    Examples
    --------
    >>> from sktransfer._runtime import force_cpu_kind, resolve_policy
    >>> with force_cpu_kind("avx2"):
    ...     policy = resolve_policy("cpu")
    >>> policy.step_autocast is None, policy.channels_last, policy.engine
    (True, False, 'onnxruntime')
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if precision not in PRECISIONS and precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    autocast = resolve_precision(precision, dev)
    kind = rules = None
    if dev.type == "cpu":
        kind = cpu_kind()
        rules = cpu_rules(kind)
    if precision == "auto":
        # training: bf16 on CUDA where supported; fp32 on every CPU, except
        # the cached steps where the kind's rules say bf16
        train = torch.bfloat16 if autocast is torch.bfloat16 else None
        steps = torch.bfloat16 if rules is not None and rules.bf16_steps else None
    else:
        train, steps = autocast, None
    return RuntimePolicy(
        device=dev,
        precision=precision,
        cpu_kind=kind,
        autocast=autocast,
        train_autocast=train,
        step_autocast=steps,
        # CUDA: channels_last with autocast, as PyTorch's AMP guidance has it
        channels_last=rules.channels_last if rules is not None else True,
        engine=resolve_engine(engine, dev, autocast),
        engine_min_images=ENGINE_MIN_IMAGES,  # read now: tests can lower them
        trace_min_forwards=TRACE_MIN_FORWARDS,
        threads=torch.get_num_threads(),
    )
