"""On-disk cache of CNN codes, keyed per image content and per backbone spec.

Layout under the cache directory::

    <root>/sktransfer-codes/<spec digest>/spec.txt        what the digest stands for
    <root>/sktransfer-codes/<spec digest>/<uuid>.npy      one shard per written chunk

A shard is one structured ``.npy`` array with fields ``key`` (16-byte image digest)
and ``code`` (float32 vector). Shards are written to a temporary name and published
with :func:`os.replace`, which is atomic on POSIX and Windows, so processes sharing a
directory (joblib / dask workers, several runs) never see a partial shard; two
processes that extract the same image concurrently both write it, which is harmless
(same code). Readers keep a per-process index of the shards they have already read
and only open new ones.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

import numpy as np
import torch

from ._runtime import process_cache

__all__ = ["CodeCache", "resolve_cache_dir", "image_digests", "state_digest"]

_SUBDIR = "sktransfer-codes"
_DIGEST = 16


def resolve_cache_dir(cache):
    """``None`` | ``joblib.Memory`` | directory -> root directory or None."""
    if cache is None:
        return None
    location = getattr(cache, "location", cache)  # joblib.Memory
    if location is None:  # Memory(location=None) means "no caching"
        return None
    if not isinstance(location, (str, os.PathLike)):
        raise TypeError(
            f"cache must be None, a directory path or a joblib.Memory, got "
            f"{type(cache).__name__}."
        )
    return Path(location).expanduser()


def _blake(*parts):
    h = hashlib.blake2b(digest_size=_DIGEST)
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x00")
    return h


# Training-only regularizers: their rates change no output in eval mode, so two
# networks that differ only there compute the same codes.
_TRAINING_ONLY = ("Dropout", "DropPath", "DropBlock", "StochasticDepth")


def _architecture(net):
    """What the network computes, apart from its tensors: class, layers, settings.

    The class (timm's architecture name where it has one) and, per submodule,
    its name, class and settings (``extra_repr``: strides, padding, groups...).
    Identities and training-only regularizers are left out: they compute nothing
    in eval mode (a drop-path rate set for a fine-tune changes no code). Unlike
    ``repr(net)``, a module's own ``__repr__`` (which may print addresses or
    state) never enters.
    """
    cfg = getattr(net, "pretrained_cfg", None) or {}
    parts = [cfg.get("architecture") or type(net).__qualname__]
    for name, m in net.named_modules():
        kind = type(m).__qualname__
        if kind == "Identity" or kind.startswith(_TRAINING_ONLY):
            continue
        parts.append(f"{name}:{type(m).__module__}.{kind}({m.extra_repr()})")
    return "\n".join(parts)


def state_digest(net):
    """Digest of a network's architecture and every tensor of its state dict."""
    h = _blake(_architecture(net))
    for name, t in net.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def image_digests(images):
    """One 16-byte digest per image of an :class:`ImageData` (content, not name).

    Arrays hash their raw pixels with dtype and shape; PIL images their mode, size
    and pixels; files their bytes (so a copied or renamed file still hits). A
    file's digest is remembered in the process under its path, size and
    modification time, so digesting it again (a ``predict`` after ``fit``) costs
    a ``stat``, not a read.
    """
    out = np.empty(len(images), dtype=f"S{_DIGEST}")
    items = images.items
    if images.kind == "array":
        head = f"{items.dtype.str}{items.shape[1:]}/{images.divisor}".encode()
        for i in range(len(items)):
            out[i] = _blake(head, np.ascontiguousarray(items[i]).tobytes()).digest()
        return out
    for i, item in enumerate(items):
        if images.kind == "paths":
            out[i] = _file_digest(item)
        elif hasattr(item, "mode") and hasattr(item, "tobytes"):
            out[i] = _blake("pil", item.mode, item.size, item.tobytes()).digest()
        else:
            a = np.asarray(item)
            out[i] = _blake(
                "arr", a.dtype.str, a.shape, images.raw, a.tobytes()
            ).digest()
    return out


_FILE_DIGESTS = process_cache("file_digests")


def _file_digest(path):
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        h = hashlib.blake2b(digest_size=_DIGEST)
        h.update(b"file\x00")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _FILE_DIGESTS[key] = h.digest()
    return digest


class _Index:
    """What one process knows about one spec directory."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = set()
        self.rows = {}  # digest -> (shard array, row)


_INDEXES = process_cache("code_cache_indexes")
_INDEXES_LOCK = threading.Lock()


class CodeCache:
    """Codes of one backbone spec in one directory.

    Parameters
    ----------
    root : path
        The cache directory (created on first write).
    spec : str
        A description of everything that changes a code (backbone digest, layers,
        pooling, preprocessing, precision); its digest names the subdirectory.
    width : int
        Length of one code.
    """

    def __init__(self, root, spec, width):
        self.spec = spec
        self.width = int(width)
        self.dir = Path(root) / _SUBDIR / _blake(spec).hexdigest()
        self.dtype = np.dtype([("key", f"S{_DIGEST}"), ("code", "<f4", (self.width,))])
        with _INDEXES_LOCK:
            self.index = _INDEXES.setdefault(str(self.dir.resolve()), _Index())

    def _refresh(self):
        try:
            names = [
                n
                for n in os.listdir(self.dir)
                if n.endswith(".npy") and not n.startswith(".")
            ]
        except FileNotFoundError:
            return
        for name in names:
            if name in self.index.seen:
                continue
            try:
                shard = np.load(self.dir / name, mmap_mode="r")
            except (OSError, ValueError):  # unreadable shard: ignore, recompute
                continue
            if shard.dtype != self.dtype:
                continue
            self.index.seen.add(name)
            for row, key in enumerate(shard["key"]):
                self.index.rows.setdefault(bytes(key), (shard, row))

    def lookup(self, keys, out):
        """Fill ``out[i]`` for every cached ``keys[i]``; return the missing indices."""
        with self.index.lock:
            self._refresh()
            rows = self.index.rows
            missing = []
            for i, key in enumerate(keys):
                hit = rows.get(bytes(key))
                if hit is None:
                    missing.append(i)
                else:
                    out[i] = hit[0]["code"][hit[1]]
        return np.asarray(missing, dtype=np.intp)

    def store(self, keys, codes):
        """Publish one shard atomically (temp file + os.replace)."""
        if len(keys) == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.txt"
        if not spec_file.exists():
            tmp = self.dir / f".spec-{uuid.uuid4().hex}.tmp"
            tmp.write_text(self.spec + "\n")
            os.replace(tmp, spec_file)
        shard = np.empty(len(keys), dtype=self.dtype)
        shard["key"] = keys
        shard["code"] = codes
        name = f"{uuid.uuid4().hex}.npy"
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, shard)
        os.replace(tmp, self.dir / name)
        shard = np.load(self.dir / name, mmap_mode="r")  # keep RAM bounded
        with self.index.lock:
            self.index.seen.add(name)
            for row, key in enumerate(keys):
                self.index.rows.setdefault(bytes(key), (shard, row))
