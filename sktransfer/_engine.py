"""Inference engines: run a network the way :class:`_runtime.RuntimePolicy` chose.

Two engines with one interface, ``engine(x) -> float32 CPU tensor``:

* :class:`OnnxEngine`: ONNX Runtime on a graph exported from the network with
  ``torch.export`` (non-strict) and ``torch.onnx.export(..., dynamo=True)``,
  batch axis dynamic. The graph is checked against the eager network (relative
  to the output's scale) before it is used, and kept on disk under
  :func:`_runtime.engine_cache_dir`, keyed by the weights digest, what the graph
  computes, the input shape and the torch / onnx / onnxruntime versions, so a
  second process loads it instead of exporting again (export takes seconds).
* :class:`TorchEngine`: the eager network in eval mode under
  ``inference_mode`` (channels_last where the policy says), with autocast when
  a reduced precision is asked for and pinned host memory on CUDA.

:func:`build_engine` prefers what the policy says and falls back to torch with a
``UserWarning`` that says why (onnxruntime missing, export failure, a graph that
disagrees with the network, a CUDA device), never silently.

The policy (which engine for which device and precision, where graphs are
cached) is :mod:`sktransfer._runtime`'s; this module is the mechanism and
imports it, never the reverse, so that importing the runtime policy stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
import warnings

import numpy as np
import torch

from ._runtime import (
    GLOBAL_RNG_LOCK,
    engine_cache_dir,
    named_lock,
    process_cache,
)

__all__ = [
    "OnnxEngine",
    "TorchEngine",
    "build_engine",
    "export_graph",
    "forward_halving",
    "shared_engine",
]

OPSET = 18
# The exported graph must reproduce the eager network to this fraction of the
# output's largest magnitude (fp32 graph optimizations reorder sums: ~1e-6).
TOLERANCE = 1e-4
_FORMAT = "sktransfer-onnx v1"

# path of each graph exported by this process -> seconds the export took
EXPORTS = process_cache("onnx_exports")
_SESSIONS = process_cache("onnx_sessions")
_FAILURES = process_cache("onnx_failures")
# engines of pretrained (never modified) backbone specs, shared in the process
_SHARED = process_cache("engines")
_SHARED_MAX = 16


class EngineFallback(Exception):
    """Why the preferred engine cannot run this network (said in the warning)."""


# --------------------------------------------------------------------------- torch
class TorchEngine:
    """The eager network: eval mode, ``inference_mode``.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a normalized ``(b, c, h, w)`` batch to one tensor. Moved to the
        policy's device (and memory format) in place.
    policy : RuntimePolicy
        Its ``device``, ``autocast`` (None: fp32) and ``channels_last``.
    """

    kind = "torch"

    def __init__(self, module, policy):
        self.module = module.eval().to(policy.device)
        self.device = policy.device
        self.autocast = policy.autocast
        self.channels_last = policy.channels_last
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)

    def __call__(self, x):
        # Extraction and prediction run in eval mode whatever the module's flag:
        # someone may have called ``.train()`` on the fitted network.
        if any(m.training for m in self.module.modules()):
            self.module.eval()
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        if x.ndim == 4 and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        # On the CPU, small calls keep activations in the caches (see
        # ORT_PIXELS_PER_CALL); on CUDA one call per batch.
        step = len(x) if self.device.type == "cuda" else micro_batch(x.shape)
        with torch.inference_mode(), autocast:
            out = torch.cat([self.module(c).float() for c in x.split(step)])
        return out.cpu()


# ----------------------------------------------------------------------- onnxruntime
class OnnxEngine:
    """ONNX Runtime on an exported graph (fp32, CPU).

    Parameters
    ----------
    session : onnxruntime.InferenceSession
    path : pathlib.Path or None
        Where the graph is cached (None when it could not be written).
    """

    kind = "onnxruntime"
    autocast = None
    device = torch.device("cpu")

    def __init__(self, session, path=None):
        self.session = session
        self.path = path
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x):
        x = x.detach().to("cpu", torch.float32).contiguous().numpy()
        step = micro_batch(x.shape)
        outs = [
            self.session.run(None, {self.input_name: x[i : i + step]})[0]
            for i in range(0, len(x), step)
        ]
        return torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))


#: Pixels (images x height x width) ONNX Runtime gets per call. Measured on
#: EfficientNet-Lite0 at 224 px on a 2-core AMD EPYC: 4 images per call ran at
#: about 400 images/s, 32 per call at about 290 (the activations of a small batch
#: stay in the CPU caches). The estimators' ``batch_size`` still bounds memory
#: and the data pipeline; only ORT's calls are split.
ORT_PIXELS_PER_CALL = 4 * 224 * 224


def micro_batch(shape):
    """Images per ONNX Runtime call for inputs of ``shape`` ``(b, c, h, w)``."""
    pixels = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return max(1, ORT_PIXELS_PER_CALL // max(pixels, 1))


def _versions():
    import onnx
    import onnxruntime

    return (
        f"torch {torch.__version__}; onnx {onnx.__version__}; "
        f"onnxruntime {onnxruntime.__version__}; opset {OPSET}"
    )


def graph_spec(digest, what, input_shape):
    """The text a cached graph's file name is the digest of."""
    shape = "x".join(str(int(s)) for s in input_shape)
    return f"{_FORMAT}; weights {digest}; {what}; input (batch, {shape}); {_versions()}"


def _session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings go to stderr
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(module, input_shape, path):
    """Export ``module`` for ``(batch, *input_shape)`` inputs to ``path``."""
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    start = time.perf_counter()
    # the caller's RNG stays where it was, whatever the exporter draws; locked,
    # so that no fit in another thread has its owned stream swapped in meanwhile
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]), torch.no_grad():
        program = torch.export.export(
            module, (example,), dynamic_shapes=({0: batch},), strict=False
        )
        onnx_program = torch.onnx.export(
            program,
            (example,),
            dynamo=True,
            input_names=["x"],
            output_names=["y"],
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    onnx_program.save(str(path))
    return time.perf_counter() - start


def _check_agrees(engine, module, input_shape):
    """Raise EngineFallback unless ``engine`` reproduces the eager ``module``.

    Three images (the graph was exported with two, so this also checks the
    dynamic batch axis) of standard normal noise, the scale of normalized
    images.
    """
    x = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = module(x).float()
    got = engine(x)
    if got.shape != want.shape:
        raise EngineFallback(
            f"the exported graph returns shape {tuple(got.shape)}, the network "
            f"{tuple(want.shape)}"
        )
    scale = float(want.abs().max())
    err = float((got - want).abs().max())
    if not err <= TOLERANCE * max(scale, 1e-12):
        raise EngineFallback(
            f"the exported graph disagrees with the network (max difference "
            f"{err:.2e} for outputs of scale {scale:.2e}; tolerance {TOLERANCE:g} "
            f"of the scale)"
        )


def _onnx_engine(module, input_shape, digest, what, threads):
    """An OnnxEngine for ``module``, from the disk cache or a fresh export."""
    try:
        import onnx  # noqa: F401 - needed by the exporter
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise EngineFallback(
            f"{exc.name} is not installed (pip install onnxruntime onnx onnxscript)"
        ) from None
    spec = graph_spec(digest, what, input_shape)
    name = hashlib.blake2b(spec.encode(), digest_size=16).hexdigest()
    if name in _FAILURES:
        raise EngineFallback(_FAILURES[name])
    with named_lock(("onnx export", name)):  # one export per graph, any thread
        key = (name, threads)
        if key in _SESSIONS:
            return _SESSIONS[key]
        folder = engine_cache_dir()
        path = folder / f"{name}.onnx"
        try:
            engine = None
            if path.is_file():
                try:
                    engine = OnnxEngine(_session(path, threads), path)
                except Exception:  # noqa: BLE001 - a damaged file: export again
                    engine = None
            if engine is None:
                engine = _export_to_cache(
                    module, input_shape, folder, name, spec, threads
                )
            try:
                _check_agrees(engine, module, input_shape)
            except EngineFallback:
                raise
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime cannot run it
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                raise EngineFallback(
                    f"ONNX Runtime cannot run the exported graph "
                    f"({type(exc).__name__}: {first})"
                ) from None
        except EngineFallback as exc:
            _FAILURES[name] = str(exc)
            if engine is not None and engine.path is not None:
                with contextlib.suppress(OSError):
                    os.remove(engine.path)
            raise
        _SESSIONS[key] = engine
        return engine


def _export_to_cache(module, input_shape, folder, name, spec, threads):
    """Export, publish atomically under ``folder`` and open a session on it."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{name}.{uuid.uuid4().hex}.tmp.onnx"
        tmp.touch()
        cached = True
    except OSError as exc:
        warnings.warn(
            f"cannot write exported graphs to {folder} ({exc.strerror}); this "
            f"process exports again next time. Set SKTRANSFER_CACHE_DIR to a "
            f"writable directory.",
            UserWarning,
            stacklevel=4,
        )
        tmp = os.path.join(tempfile.mkdtemp(prefix="sktransfer-onnx-"), "g.onnx")
        cached = False
    try:
        try:
            seconds = _export(module, input_shape, tmp)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: torch
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise EngineFallback(
                f"exporting the network to ONNX failed ({type(exc).__name__}: {first})"
            ) from None
        if not cached:
            EXPORTS[str(tmp)] = seconds
            path = None
        else:
            path = folder / f"{name}.onnx"
            os.replace(tmp, path)  # atomic: other processes never see half a file
            with contextlib.suppress(OSError):
                (folder / f"{name}.txt").write_text(spec + "\n")
            EXPORTS[str(path)] = seconds
        try:
            return OnnxEngine(_session(path or tmp, threads), path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime rejects the graph
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            if path is not None:
                with contextlib.suppress(OSError):
                    os.remove(path)
            raise EngineFallback(
                f"ONNX Runtime cannot load the exported graph "
                f"({type(exc).__name__}: {first})"
            ) from None
    finally:
        if cached and os.path.exists(tmp):
            os.remove(tmp)


def export_graph(module, *, input_shape, digest, what):
    """The ONNX graph the engine runs for ``module``, as an ``onnx.ModelProto``.

    The same graph as :func:`build_engine`'s ONNX Runtime engine (input ``x``,
    a normalized ``(batch, *input_shape)`` float batch; output ``y``): loaded
    from the on-disk cache when this network was exported before, otherwise
    exported, checked against ``module`` and cached, exactly as an engine
    would. For :func:`sktransfer.export_onnx`, which builds one file around it.

    Parameters
    ----------
    module : torch.nn.Module
        On the CPU; put in eval mode.
    input_shape, digest, what
        As for :func:`build_engine` (they key the cached graph).

    Returns
    -------
    model : onnx.ModelProto

    Raises
    ------
    EngineFallback
        When onnxruntime / onnx are missing, the export fails or the graph
        disagrees with the network.
    """
    import tempfile

    import onnx

    module.eval()
    engine = _onnx_engine(module, tuple(input_shape), digest(), what, threads=1)
    if engine.path is not None and engine.path.is_file():
        return onnx.load(str(engine.path))
    # the cache folder is not writable: the engine's graph was not kept
    with tempfile.TemporaryDirectory(prefix="sktransfer-onnx-") as folder:
        path = os.path.join(folder, "graph.onnx")
        _export(module, tuple(input_shape), path)
        return onnx.load(path)


# --------------------------------------------------------------------------- build
def build_engine(module, *, policy, input_shape, digest, what):
    """The engine that runs ``module`` (eval mode) as ``policy`` says.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a normalized ``(b, *input_shape)`` batch to one tensor.
    policy : RuntimePolicy
        Its preferred ``engine``, ``device``, ``autocast``, memory format and
        ``threads`` (:func:`_runtime.resolve_policy`).
    input_shape : tuple of int
        ``(channels, height, width)`` of one input.
    digest : callable
        Returns the digest of ``module``'s weights (called only when a graph is
        looked up or exported).
    what : str
        What the graph computes (outputs, pooling): part of its cache key.

    Returns
    -------
    engine : OnnxEngine or TorchEngine
    """
    module.eval()
    if policy.engine == "onnxruntime":
        try:
            if policy.device.type != "cpu":
                raise EngineFallback(
                    f"ONNX Runtime runs on the CPU only in sktransfer, and the "
                    f"device is {policy.device}"
                )
            return _onnx_engine(
                module, tuple(input_shape), digest(), what, policy.threads
            )
        except EngineFallback as exc:
            warnings.warn(
                f"engine='onnxruntime': {exc}. Running the network in torch instead "
                f"(slower on the CPU). engine='torch' silences this "
                f"warning.",
                UserWarning,
                stacklevel=3,
            )
    return TorchEngine(module, policy)


def shared_engine(key, build):
    """The process's engine for ``key``, built by ``build()`` the first time.

    For pretrained backbone specs, which nobody modifies: clones, CV folds and
    grid-search candidates then export and load a graph once per process.
    """
    with named_lock(("shared engine", key)):
        engine = _SHARED.get(key)
        if engine is None:
            engine = build()
            if len(_SHARED) >= _SHARED_MAX:
                _SHARED.clear()
            _SHARED[key] = engine
        return engine


def forward_halving(engine, batch):
    """Run a batch; on out-of-memory, split it in halves and retry."""
    try:
        return engine(batch)
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        if len(batch) == 1:
            raise MemoryError(
                "out of memory on a single image; lower input_size or use device='cpu'."
            ) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc) or len(batch) == 1:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(batch) // 2
    return torch.cat(
        [forward_halving(engine, batch[:half]), forward_halving(engine, batch[half:])]
    )
