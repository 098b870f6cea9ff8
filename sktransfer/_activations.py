"""Activation cache at the freeze boundary of a fine-tune (private).

When the part of the network before the first trained layer is frozen (its
BatchNorms in inference mode, no dropout, no gradients), its output depends on
the image alone. :func:`plan_cut` finds that boundary; :class:`ActivationSet`
computes the frozen prefix once per image and view, and the training epochs run
only the trained suffix.

Stores
    Activations are kept per *spec* (backbone digest, cut point, preprocessing,
    augmentation, view seed, precision) and per image content digest, in a
    process-wide registry (``sktransfer._runtime.process_cache``), so epochs,
    freeze phases, CV folds and grid candidates that share the frozen part share
    the work. They live in RAM up to :data:`ACTIVATION_RAM_BYTES` (all stores
    together), then in disk-backed ``np.memmap`` slabs in the temporary
    directory. ``cache=<directory>`` also writes them there (one
    :class:`~sktransfer._cache.CodeCache` per spec), for other processes.

Checkpoint
    Cuts past the network's last downsampling block (the default policy's, a
    few trained stages, a frozen body) derive from one shared store at that
    block's input (:func:`checkpoint_index`): a set at such a cut fills the
    checkpoint's rows first, then runs only the low-resolution units in
    between. So the candidates of a grid over ``train_layers`` (and the CV
    folds of each) run the expensive high-resolution prefix once per image and
    view. The checkpoint is skipped when its rows would not fit in the RAM
    budget. A network that never downsamples (a ViT, cut between its
    transformer blocks) keeps its checkpoint where the default policy starts
    training: :func:`checkpoint_block` states the rule.

Prediction
    A fitted model keeps the specs of its stores (:meth:`ActivationSet.
    shortcuts`, in the estimator's derived state: never pickled). Predicting
    images whose clean view 0 is stored -- the held-out fold of one CV split
    is the training fold of the other -- runs only the units after the store
    (:func:`lookup`); the other images run the whole network.

Views
    View 0 is the un-augmented image. With augmentation, views ``1..K`` are K
    augmented copies, each drawn from a seed derived from the image digest, the
    view index and the fit's view seed, so the same image gets the same views in
    every fold and candidate; training draws one view per image per epoch.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import threading
from collections import Counter

import numpy as np
import torch
from torch import nn

from ._augment import make_augmentation
from ._backbones import sequential_units
from ._cache import CodeCache, image_digests, state_digest
from ._runtime import (
    process_cache,
    resolve_policy,
    seeded_global_rng,
)
from ._vit import token_units

__all__ = [
    "ACTIVATION_RAM_BYTES",
    "ActivationSet",
    "CachedDataset",
    "FORWARDS",
    "StoredRows",
    "activation_memory",
    "cache_units",
    "checkpoint_index",
    "lookup",
    "open_session",
    "predict_from_stores",
    "plan_cut",
    "units_fingerprint",
]

#: RAM budget (bytes) of all activation stores together; beyond it, memmap slabs.
ACTIVATION_RAM_BYTES = 1 << 30
#: Images run through frozen prefixes in this process (tests and benchmarks).
FORWARDS = process_cache("forwards", Counter)
#: Exported prefixes, ``(store spec, first unit run) -> engine or None``.
_PREFIX_ENGINES = process_cache("activation_engines")

_STORES = process_cache("finetune_activations")
_STORES_LOCK = threading.Lock()


def run_units(units, x):
    for _, m in units:
        x = m(x)
    return x


def _holds_trained(name, trainable):
    """Whether module ``name`` is, or contains, a trained parameter."""
    return any(t == name or t.startswith(name + ".") for t in trainable)


def cache_units(body, trainable, units=None):
    """The body's units, with the one holding the first trained layer opened.

    ``units`` are the body's :attr:`~sktransfer._backbones.Anatomy.units`
    (read from ``body`` when None).

    :func:`~sktransfer._backbones.sequential_units` stops at stages
    (``blocks.5``); when training starts inside a stage (``train_layers=
    "blocks.5.1"``), that stage is replaced by its children, again and again
    while it is an ``nn.Sequential``, so that the frozen blocks before the
    first trained one belong to the cached prefix too. A token transformer
    (a timm ViT) is cut between its transformer blocks instead:
    :func:`~sktransfer._vit.token_units`.
    """
    tokens = token_units(body)
    if tokens is not None:
        return tokens
    if not units:
        units = list(sequential_units(body))
    else:
        units = [(name, body.get_submodule(name)) for name in units]
    while True:
        i = next(
            (i for i, (name, _) in enumerate(units) if _holds_trained(name, trainable)),
            None,
        )
        if i is None:
            return units
        name, unit = units[i]
        children = list(unit.named_children())
        if not isinstance(unit, nn.Sequential) or _holds_trained(
            f"{name}.{children[0][0]}", trainable
        ):
            return units
        units[i : i + 1] = [(f"{name}.{sub}", m) for sub, m in children]


def checkpoint_block(body, anatomy):
    """Where the shared checkpoint is: the cut rule of the activation cache.

    * A network that downsamples: the input of its last downsampling block
      (``anatomy.last_downsampling``). Past it every unit runs on the smallest
      maps, so cuts from there on (the default policy's, a few trained
      stages, a frozen body) derive from one store cheaply.
    * A network that never downsamples (a ViT: every transformer block maps
      its tokens to as many tokens of one width, so the rows at every cut
      between blocks are of one size and each block costs the same): the
      input of the first stage the default policy trains when nothing
      downsamples, the last ``AUTO_TRAIN_LAYERS`` of ``anatomy.stages``
      (``blocks.10`` of a 12-block ViT). The default cut stores there; the
      cuts after it (fewer trained blocks, a frozen body) derive from it by
      running the few blocks in between, and a cut before it has its own
      store. A token transformer (:func:`~sktransfer._vit.token_units`) is
      one that never downsamples, whatever the layout of its patch
      embedding's output.

    Returns the block's name, or None (no checkpoint).
    """
    if token_units(body) is None and anatomy.last_downsampling is not None:
        return anatomy.last_downsampling
    from ._training import AUTO_TRAIN_LAYERS  # (_training imports this module)

    stages = anatomy.stages
    return stages[-AUTO_TRAIN_LAYERS] if len(stages) > AUTO_TRAIN_LAYERS else None


def checkpoint_index(units, block):
    """Index of the unit whose input is ``block``'s input, or None.

    ``block`` names a module of the body (``"blocks.5.0"``); the unit is
    ``block`` itself or the stage that starts with it. A block inside a stage
    that does not start with it has no unit boundary at its input: None.
    """
    if block is None:
        return None
    for i, (name, unit) in enumerate(units):
        if name == block:
            return i
        if block.startswith(name + "."):
            first = name
            while isinstance(unit, nn.Sequential) and len(unit):
                sub, unit = next(iter(unit.named_children()))
                first = f"{first}.{sub}"
                if first == block:
                    return i
            return None
    return None


def plan_cut(body, trainable, bn, probe, units=None):
    """Where the frozen prefix ends, or ``(None, reason)``.

    ``units`` as in :func:`cache_units`.

    Returns
    -------
    cut : int or None
        Units ``[0, cut)`` of :func:`cache_units` form the frozen prefix whose
        output can be cached; ``cut == len(units)`` when nothing in the body
        trains.
    reason : str or None
        Why the prefix cannot be cached, when ``cut`` is None.
    """
    if bn == "train":
        return None, "bn='train' trains every BatchNorm, frozen parts included"
    units = cache_units(body, trainable, units)
    # by the tensors: a unit of token_units holds parameters of several names
    trained = {id(p) for name, p in body.named_parameters() if name in trainable}
    cut = next(
        (
            i
            for i, (_, unit) in enumerate(units)
            if any(id(p) in trained for p in unit.parameters())
        ),
        len(units),
    )
    if cut == 0:
        return None, "the first layer trains, so nothing before it is frozen"
    if cut < len(units) and getattr(body, "drop_rate", 0):
        return None, "the backbone's own head dropout (drop_rate) is not a module"
    body.eval()
    try:
        with torch.no_grad():
            full = body(probe)
            seq = run_units(units, probe)
        same = full.flatten(1).shape == seq.flatten(1).shape and torch.allclose(
            full.flatten(1), seq.flatten(1), rtol=1e-4, atol=1e-5
        )
    except Exception:  # noqa: BLE001 - any failure means "not a plain sequence"
        same = False
    if not same:
        return None, (
            f"{type(body).__name__}'s forward is not the sequence of its children"
        )
    return cut, None


# --------------------------------------------------------------------- the stores
class _Store:
    """Rows of one spec: key (image digest + view) -> (slab, row)."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.width = int(np.prod(shape))
        self.index = {}
        self.slabs = []  # (array, file or None)
        self.lock = threading.Lock()

    def ram_bytes(self):
        return sum(a.nbytes for a, f in self.slabs if f is None)

    def disk_bytes(self):
        return sum(a.nbytes for a, f in self.slabs if f is not None)


def activation_memory():
    """``(ram_bytes, disk_bytes)`` held by all activation stores of this process."""
    with _STORES_LOCK:
        stores = list(_STORES.values())
    return (sum(s.ram_bytes() for s in stores), sum(s.disk_bytes() for s in stores))


def _new_slab(rows, width):
    """An array for ``rows`` rows: in RAM within the budget, else a memmap."""
    nbytes = rows * width * 4
    if activation_memory()[0] + nbytes <= ACTIVATION_RAM_BYTES:
        return np.empty((rows, width), np.float32), None
    f = tempfile.TemporaryFile(prefix="sktransfer-act-")  # deleted on close
    return np.memmap(f, np.float32, mode="w+", shape=(rows, width)), f


def units_fingerprint(units):
    """A fingerprint of the tensors of ``units``: changes when one is modified.

    Each parameter and buffer's identity, storage and version counter (bumped
    by every in-place update: an optimizer step, a BatchNorm's statistics, a
    ``copy_`` of new weights). Hashing the weights themselves cost more than
    a head-only fit's training on cached features.
    """
    return tuple(
        (id(t), t.data_ptr(), t._version)
        for _, m in units
        for t in (*m.parameters(), *m.buffers())
    )


def _cut_spec(base, unit, shape=None):
    """Key of the store of a prefix ending at ``unit`` with outputs of ``shape``.

    The one format: sets write their rows under it, and
    :meth:`ActivationSet.body_outputs` looks a deeper cut's store up by its
    beginning (``shape=None``).
    """
    return f"{base}|cut={unit}|shape=" + ("" if shape is None else f"{shape}")


def _checkpoint_fits(spec, nbytes):
    """Whether a checkpoint store may be used: it exists, or ``nbytes`` fit in RAM."""
    with _STORES_LOCK:
        exists = spec in _STORES
    return exists or activation_memory()[0] + nbytes <= ACTIVATION_RAM_BYTES


def _store_for(spec, shape):
    with _STORES_LOCK:
        store = _STORES.get(spec)
        if store is None or store.shape != tuple(shape):
            store = _STORES[spec] = _Store(shape)
        return store


def lookup(spec, digests):
    """The stored clean views (view 0) of images ``digests`` in store ``spec``.

    Returns
    -------
    found : ndarray of bool
        Which images have a stored row.
    rows : torch.Tensor or None
        Their rows, ``(found.sum(), *shape)``, in order; None when none is.
    """
    with _STORES_LOCK:
        store = _STORES.get(spec)
    if store is None:
        return np.zeros(len(digests), bool), None
    keys = [_row_key(d, 0, "") for d in digests]
    with store.lock:
        hits = [store.index.get(k) for k in keys]
    found = np.array([h is not None for h in hits], bool)
    if not found.any():
        return found, None
    rows = np.stack([np.asarray(slab[row]) for slab, row in filter(None, hits)])
    return found, torch.from_numpy(rows).view(-1, *store.shape)


def _row_key(digest, view, views_spec):
    """Key of one row: the image, the view and (augmented views) how they are drawn."""
    h = hashlib.blake2b(bytes(digest) + view.to_bytes(4, "little"), digest_size=16)
    if view > 0:
        h.update(views_spec.encode())
    return h.digest()


def _view_seed(digest, view, seed):
    h = hashlib.blake2b(
        bytes(digest) + view.to_bytes(4, "little") + int(seed).to_bytes(8, "little"),
        digest_size=8,
    )
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def _prefix_engine(prefix, probe, spec, policy):
    """Frozen units exported to ONNX Runtime; None when that is not possible.

    The graph is checked against eager and cached on disk by
    :func:`sktransfer._engine.build_engine`; ``spec`` (backbone digest, cut,
    preprocessing) keys it. A fallback warns there, and the prefix then runs
    eagerly here.
    """
    from ._engine import build_engine

    seq = copy.deepcopy(nn.Sequential(*[m for _, m in prefix])).eval()
    digest = hashlib.blake2b(spec.encode(), digest_size=16).hexdigest()
    engine = build_engine(
        seq,
        policy=policy,
        input_shape=tuple(probe.shape[1:]),
        digest=lambda: digest,
        what="fine-tuning prefix",
    )
    return engine if engine.kind == "onnxruntime" else None


def _augment(x, transform, seed):
    """``transform(x)`` with the global RNG seeded for this image and view alone."""
    with seeded_global_rng(seed):
        return transform(x)


class ActivationSet:
    """The frozen prefix's outputs for a fit's images, ``n_views + 1`` per image.

    Parameters
    ----------
    units : list of (name, module)
        The body's units; ``units[:cut]`` is the frozen prefix.
    cut : int
    dataset : ImageDataset
        The fit's images (resized ``[0, 1]`` tensors, un-normalized).
    digests : ndarray of bytes
        One content digest per image of ``dataset``.
    spec : str
        Everything else that changes the prefix's output (backbone digest,
        preprocessing, precision); the cut's name is added here.
    transform : callable or None
        Augmentation; ``None`` means one (clean) view per image. Its ``repr``
        and ``view_seed`` are part of the key of the augmented views only, so
        clean views are shared by fits that augment differently.
    n_views : int
        Augmented views per image.
    view_seed : int
    device : torch.device
    autocast : torch.dtype or None
    batch_size : int
    disk : CodeCache factory or None
        ``disk(spec, width)`` -> a :class:`~sktransfer._cache.CodeCache`.
    checkpoint : int or None
        With ``0 < checkpoint < cut``, the rows are derived from the shared
        store of ``units[:checkpoint]`` (filled first, for every view) by
        running ``units[checkpoint:cut]``, when that store's new rows fit in
        the RAM budget (or it holds them already).
    """

    def __init__(
        self,
        units,
        cut,
        dataset,
        digests,
        spec,
        transform,
        n_views,
        view_seed,
        device,
        autocast=None,
        batch_size=32,
        disk=None,
        checkpoint=None,
    ):
        self.prefix = units[:cut]
        self.suffix = units[cut:]
        self.dataset = dataset
        self.digests = digests
        self.transform = transform
        self.n_views = int(n_views) if transform is not None else 0
        self.view_seed = int(view_seed)
        self.views_spec = f"{transform!r}|seed={self.view_seed}"
        self.device = device
        self.autocast = autocast
        self.batch_size = batch_size
        probe = dataset.pre.normalize(dataset.image(0)[None]).to(device)
        with torch.no_grad(), self._autocast():
            if checkpoint is not None and 0 < checkpoint < cut:
                mid = run_units(units[:checkpoint], probe)
                ck_shape = tuple(mid.shape[1:])
                out = run_units(units[checkpoint:cut], mid)
            else:
                checkpoint, out = None, run_units(self.prefix, probe)
        self.shape = shape = tuple(out.shape[1:])
        self.base_spec = spec
        self.spec = _cut_spec(spec, units[cut - 1][0], shape)
        self.prefix_fingerprint = units_fingerprint(self.prefix)
        self.store = _store_for(self.spec, shape)
        self.disk = None if disk is None else disk(self.spec, self.store.width)
        n_forwards = len(digests) * (self.n_views + 1)
        # the checkpoint: the shared store the rows derive from, or None
        self.source = None
        if checkpoint is not None and _checkpoint_fits(
            _cut_spec(spec, units[checkpoint - 1][0], ck_shape),
            n_forwards * int(np.prod(ck_shape)) * 4,
        ):
            self.source = ActivationSet(
                units,
                checkpoint,
                dataset,
                digests,
                spec,
                transform,
                n_views,
                view_seed,
                device,
                autocast=autocast,
                batch_size=batch_size,
                disk=disk,
            )
            units_run = units[checkpoint:cut]
            probe = self.source.get(0, 0)[None].to(device)
        else:
            units_run = self.prefix
        # rows[v][i]: (slab, row) of view v of image i
        self.run = lambda x: run_units(units_run, x)
        policy = resolve_policy(device, "fp32")
        if (
            device.type == "cpu"
            and autocast is None
            and n_forwards >= policy.trace_min_forwards
        ):
            start = units_run[0][0]
            key = (self.spec, start)
            with self.store.lock:
                if key not in _PREFIX_ENGINES:
                    _PREFIX_ENGINES[key] = _prefix_engine(
                        units_run, probe, f"{self.spec}|from={start}", policy
                    )
                engine = _PREFIX_ENGINES[key]
            if engine is not None:
                self.run = engine
        self.rows = [self._fill(v) for v in range(self.n_views + 1)]

    def _autocast(self):
        if self.autocast is None:
            import contextlib

            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _fill(self, view):
        keys = [_row_key(d, view, self.views_spec) for d in self.digests]
        store = self.store
        with store.lock:
            missing = [i for i, k in enumerate(keys) if k not in store.index]
        if missing and self.disk is not None:
            out = np.empty((len(missing), store.width), np.float32)
            still = self.disk.lookup(np.array([keys[i] for i in missing]), out)
            found = np.setdiff1d(np.arange(len(missing)), still)
            if len(found):
                self._put([keys[missing[j]] for j in found], out[found])
            missing = [missing[j] for j in still]
        if missing:
            self._compute(missing, keys, view)
        with store.lock:
            return [store.index[k] for k in keys]

    def _put(self, keys, arr):
        slab, f = _new_slab(len(keys), self.store.width)
        slab[:] = arr.reshape(len(keys), -1)
        self._publish(keys, slab, f)

    def _publish(self, keys, slab, f):
        """Rows ``slab[j]`` of ``keys[j]`` join the store (one slab, one file)."""
        store = self.store
        with store.lock:
            store.slabs.append((slab, f))
            for row, k in enumerate(keys):
                store.index.setdefault(k, (slab, row))

    def _inputs(self, idx, view):
        """What ``self.run`` takes for images ``idx``: checkpoint rows or pixels."""
        if self.source is not None:
            return torch.stack([self.source.get(i, view) for i in idx])
        ds = self.dataset
        xs = []
        for i in idx:
            x = ds.image(i)
            if view > 0:
                seed = _view_seed(self.digests[i], view, self.view_seed)
                x = _augment(x, self.transform, seed)
            xs.append(x)
        return ds.pre.normalize(torch.stack(xs))

    @torch.no_grad()
    def _compute(self, missing, keys, view):
        # One slab for all the missing rows of this view, filled batch by
        # batch: past the RAM budget a slab is a file, and a file per batch
        # ran a long session out of file descriptors.
        slab, f = _new_slab(len(missing), self.store.width)
        for start in range(0, len(missing), self.batch_size):
            idx = missing[start : start + self.batch_size]
            batch = self._inputs(idx, view).to(self.device)
            with self._autocast():
                out = self.run(batch).float().cpu().numpy()
            FORWARDS["derived" if self.source is not None else "prefix"] += len(idx)
            out = out.reshape(len(idx), -1)
            slab[start : start + len(idx)] = out
            if self.disk is not None:
                self.disk.store(np.array([keys[i] for i in idx]), out)
        self._publish([keys[i] for i in missing], slab, f)

    def shortcuts(self):
        """``[(spec, units before, units after, fingerprint of the units before)]``.

        This set's store, then its checkpoint's: where a fitted model can
        start from stored rows. The fingerprint tells whether the frozen units
        still hold the weights the rows were computed with.
        """
        out = [(self.spec, self.prefix, self.suffix, self.prefix_fingerprint)]
        if self.source is not None:
            out += self.source.shortcuts()
        return out

    def get(self, i, view):
        slab, row = self.rows[view][i]
        return torch.from_numpy(np.array(slab[row])).view(self.shape)

    def body_outputs(self):
        """The body's output for every image and view of this set, if all are stored.

        Another fit sharing this set's checkpoint may have stored them (a
        grid's frozen-body candidates: their cut is the body's end). In this
        fit's head-only epochs the trained units are frozen too, so those rows
        are what the units after the cut would compute, up to float rounding:
        the epochs then train the head on them alone. Only looked up, never
        computed: None unless every row is there (or when the cut is already
        the body's end).
        """
        if not self.suffix:
            return None
        start = _cut_spec(self.base_spec, self.suffix[-1][0])
        with _STORES_LOCK:
            store = next((s for k, s in _STORES.items() if k.startswith(start)), None)
        if store is None:
            return None
        keys = [
            [_row_key(d, v, self.views_spec) for d in self.digests]
            for v in range(self.n_views + 1)
        ]
        with store.lock:
            if not all(k in store.index for view in keys for k in view):
                return None
            rows = [[store.index[k] for k in view] for view in keys]
        return StoredRows(rows, store.shape)


class StoredRows:
    """Rows already in a store: ``get(i, view)`` as :meth:`ActivationSet.get`."""

    def __init__(self, rows, shape):
        self.rows = rows
        self.shape = tuple(shape)

    get = ActivationSet.get


class CachedDataset(torch.utils.data.Dataset):
    """Items ``({"x": activation, "sample_weight": w}, y)`` like ImageDataset's.

    ``views`` (set per epoch by the fit) picks the view of each item; ``None``
    means the clean view 0. ``head_rows`` (:meth:`ActivationSet.body_outputs`,
    or None) serve the items while ``phase`` is ``"head"`` (set per epoch with
    the module's phase).
    """

    def __init__(self, acts, indices, y, sample_weight=None, head_rows=None):
        self.acts = acts
        self.indices = np.asarray(indices)
        self.y = y
        self.sample_weight = sample_weight
        self.head_rows = head_rows
        self.phase = "body"
        self.views = None
        self.X = self.indices  # skorch's view of the data (only its length is used)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        i = int(self.indices[j])
        view = 0 if self.views is None else int(self.views[j])
        rows = self.acts
        if self.phase == "head" and self.head_rows is not None:
            rows = self.head_rows
        item = {"x": rows.get(i, view)}
        if self.sample_weight is not None:
            item["sample_weight"] = torch.tensor(self.sample_weight[i])
        return item, target_item(self.y, i)

    def clean(self):
        """The same items at the cut, always view 0 (head init, BN statistics)."""
        return CachedDataset(self.acts, self.indices, self.y, self.sample_weight)


def target_item(y, i):
    """Row ``i`` of a fit's targets as a dataset item: a class index, or a
    float32 tensor (multi-label indicators, standardized values); 0 without
    targets."""
    if y is None:
        return 0
    if y.ndim == 1 and y.dtype.kind in "iu":
        return int(y[i])
    return torch.from_numpy(np.asarray(y[i], dtype=np.float32).reshape(-1))


# ---------------------------------------------------------------- the session
def open_session(
    module, full, digests, config, plan, seed, device, *, batch_size, bn, who=None
):
    """One fit's activation cache: the frozen prefix's outputs, or None.

    ``full`` is the fit's :class:`~sktransfer._training.ImageDataset` of every
    image (``digests`` their content digests), ``config`` the
    :class:`~sktransfer._training.TrainConfig` and ``plan`` the
    :class:`~sktransfer._training.FitPlan`. Returns the :class:`ActivationSet`
    (None when the part before the first trained layer cannot be cached) and
    the description for ``policy_["cache"]``; ``who`` (the estimator's name)
    prints it.
    """
    probe = full.pre.normalize(full.image(0)[None].expand(2, -1, -1, -1))
    if not plan.cache:
        cut, reason = None, "cache=False"
    else:
        cut, reason = plan_cut(
            module.body, config.trainable, bn, probe.to(device), plan.anatomy.units
        )
    if cut is None:
        if who:
            print(
                f"[{who}] activation cache off ({reason}): every epoch runs the "
                f"whole network."
            )
        return None, f"off: {reason}"
    units = cache_units(module.body, config.trainable, plan.anatomy.units)
    checkpoint = checkpoint_index(units, checkpoint_block(module.body, plan.anatomy))
    transform = make_augmentation(plan.augment, full.pre.p.input_size)
    views = plan.augment_views if transform is not None else 0
    root = plan.cache_dir
    acts = ActivationSet(
        units,
        cut,
        full,
        digests,
        spec=(
            f"finetune-prefix|{state_digest(module.body)}"
            f"|{full.pre.p}|autocast={config.autocast}"
        ),
        transform=transform,
        n_views=views,
        view_seed=seed,
        device=device,
        autocast=config.autocast,
        batch_size=batch_size,
        disk=None if root is None else (lambda spec, w: CodeCache(root, spec, w)),
        checkpoint=checkpoint,
    )
    note = (
        f"after {units[cut - 1][0]} ({cut} of {len(units)} units frozen), "
        f"{views} augmented view(s) per image"
    )
    if acts.source is not None:
        note += f", derived from the shared checkpoint after {units[checkpoint - 1][0]}"
    if who:
        print(f"[{who}] activation cache at {note}")
    return acts, note


def predict_from_stores(est, images, out):
    """Fill ``out`` for the images whose frozen activations are stored.

    ``est`` is a fitted fine-tuned estimator. The activation stores of this
    process hold the frozen part's output of the clean training images of
    every fit that shares it: in a CV split, the held-out fold of one split
    trained in the other. Those images run only the units after the store,
    exactly the fitted network's computation (the frozen units before it are
    checked unchanged since the rows were computed). CPU, fp32,
    ``engine="auto"`` only. Returns the indices still to predict.
    """
    todo = np.arange(len(images))
    stores = est._derived().get("stores")
    net = est.net_
    if (
        not stores
        or est.engine != "auto"
        or net.config.autocast is not None
        or torch.device(net.device).type != "cpu"
    ):
        return todo
    digests = image_digests(images)
    module = net.module_.eval()
    for spec, prefix, units, fingerprint in stores:
        if units_fingerprint(prefix) != fingerprint:
            continue  # the frozen units changed since the rows were stored
        found, rows = lookup(spec, digests[todo])
        if rows is None:
            continue
        idx = todo[found]
        with torch.inference_mode():
            for start in range(0, len(idx), 64):
                x = rows[start : start + 64]
                if net.config.channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                out[idx[start : start + 64]] = module.logits_from(units, x)
        todo = todo[~found]
        if not len(todo):
            break
    return todo
