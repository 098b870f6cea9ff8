"""Save and load fitted estimators without pickle.

:func:`save` writes one zip file::

    manifest.json          format, library versions and the estimator tree: every
                           parameter and fitted attribute (``classes_``,
                           ``preprocessing_``, ...) as tagged JSON, and the digest
                           of each network's weights
    tensors.safetensors    network weights (torch tensors)
    arrays.safetensors     numeric numpy arrays (prototypes, coefficients, ...)
    skops/<i>.skops        scikit-learn parts without sktransfer estimators inside
                           (heads, scalers), written by ``skops.io``

:func:`load` reads it back without unpickling anything: JSON and safetensors hold
data only, skops parts are loaded with an explicit list of trusted types (skops
refuses any other type), and sktransfer classes are only looked up inside the
``sktransfer`` package. Networks named by a string are rebuilt from their name;
pretrained weights (``weights="imagenet"``) are not stored but re-read from the
installed weights and checked against the digest recorded at save time.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import math
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["save", "load", "VersionMismatchWarning"]

FORMAT = "sktransfer-model"
FORMAT_VERSION = 1
_LIBRARIES = ("sktransfer", "torch", "torchvision", "timm", "sklearn", "skorch")

# Types skops may load besides its defaults (scikit-learn estimators, numpy and
# builtin containers). Kept explicit and empty on purpose: anything else in a
# skops part makes ``load`` fail with the type's name.
TRUSTED_TYPES: tuple[str, ...] = ()

# Attributes that are caches rebuilt on first use, never persisted.
_TRANSIENT = frozenset({"_derived_state"})
_MODULE_RE = re.compile(r"^sktransfer(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class VersionMismatchWarning(UserWarning):
    """A model file was written with other library versions than the ones in use."""


def _versions():
    from ._runtime import library_versions

    return library_versions(_LIBRARIES)


def _is_ours(obj):
    from sklearn.base import BaseEstimator

    return isinstance(obj, BaseEstimator) and (
        type(obj).__module__ == "sktransfer"
        or type(obj).__module__.startswith("sktransfer.")
    )


def _contains_ours(est):
    if _is_ours(est):
        return True
    get_params = getattr(est, "get_params", None)
    if get_params is None:
        return False
    try:
        values = get_params(deep=True).values()
    except Exception:  # noqa: BLE001 - a broken get_params holds nothing of ours
        return False
    return any(_is_ours(v) for v in values)


# =============================================================== writing
class _Writer:
    def __init__(self):
        self.tensors = {}
        self.arrays = {}
        self.skops = {}

    # ------------------------------------------------------------ values
    def value(self, v, where):
        import torch

        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int) and not isinstance(v, enum.Enum):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"$": "float", "v": repr(v)}
        if isinstance(v, np.generic):
            item = v.item()
            if isinstance(item, (bytes, complex)) or v.dtype.kind in "OV":
                raise self._unsupported(v, where)
            return {"$": "npscalar", "dtype": v.dtype.str, "v": self.value(item, where)}
        if isinstance(v, np.ndarray):
            return self.ndarray(v, where)
        if isinstance(v, torch.Tensor):
            key = f"t{len(self.tensors)}"
            self.tensors[key] = v.detach().cpu().contiguous().clone()
            return {"$": "tensor", "key": key}
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple):
            items = [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
            return {"$": "tuple", "v": items}
        if isinstance(v, (set, frozenset)):
            items = sorted(v, key=repr)
            return {"$": "set", "v": [self.value(x, where) for x in items]}
        if isinstance(v, dict):
            items = [
                [self.value(k, f"{where} key"), self.value(x, f"{where}[{k!r}]")]
                for k, x in v.items()
            ]
            return {"$": "dict", "v": items}
        if isinstance(v, torch.dtype):
            return {"$": "torch_dtype", "v": str(v).removeprefix("torch.")}
        if isinstance(v, torch.device):
            return {"$": "torch_device", "v": str(v)}
        if isinstance(v, Path):
            return {"$": "path", "v": str(v)}
        if isinstance(v, enum.Enum):  # torchvision weights enums: load by name
            return f"{type(v).__name__}.{v.name}"
        from ._backbones import Preprocessing

        if isinstance(v, Preprocessing):
            fields = {
                f.name: self.value(getattr(v, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(v)
            }
            return {"$": "Preprocessing", "v": fields}
        location = getattr(v, "location", None)  # joblib.Memory as a cache
        if type(v).__name__ == "Memory" and isinstance(location, (str, Path)):
            return {"$": "path", "v": str(location)}
        raise self._unsupported(v, where)

    @staticmethod
    def _unsupported(v, where):
        import torch

        if isinstance(v, torch.nn.Module):
            return TypeError(
                f"cannot save {where}: it is a torch.nn.Module "
                f"({type(v).__name__}), whose code cannot be stored without pickle. "
                f"sktransfer.save rebuilds networks from their name: pass model as a "
                f"string (e.g. 'efficientnet_lite0', 'resnet18', 'timm/<name>'), or "
                f"use joblib.dump for files you only load yourself."
            )
        return TypeError(
            f"cannot save {where}: values of type {type(v).__module__}."
            f"{type(v).__qualname__} are not supported by sktransfer.save (data "
            f"only: numbers, strings, arrays, tensors, lists, dicts). Use joblib.dump "
            f"for files you only load yourself."
        )

    def ndarray(self, a, where):
        kind = a.dtype.kind
        if kind in "biuf" and a.dtype.byteorder in "=|<":
            key = f"a{len(self.arrays)}"
            self.arrays[key] = np.ascontiguousarray(a)
            return {"$": "ndarray", "key": key}
        if kind in "biuf":
            return self.ndarray(a.astype(a.dtype.newbyteorder("=")), where)
        if kind in "UO":
            flat = [self.value(x, f"{where}[{i}]") for i, x in enumerate(a.ravel())]
            return {
                "$": "ndarray_values",
                "dtype": a.dtype.str,
                "shape": list(a.shape),
                "v": flat,
            }
        raise TypeError(
            f"cannot save {where}: numpy arrays of dtype {a.dtype} are not supported."
        )

    # -------------------------------------------------------- estimators
    def estimator(self, est, where):
        from sklearn.pipeline import FeatureUnion, Pipeline

        if est is None or isinstance(est, str):  # "passthrough" / "drop"
            return est
        if isinstance(est, Pipeline):
            return self._container(est, "Pipeline", "steps", where)
        if isinstance(est, FeatureUnion):
            return self._container(est, "FeatureUnion", "transformer_list", where)
        if _is_ours(est):
            return self._ours(est, where)
        if _contains_ours(est):
            raise TypeError(
                f"cannot save {where}: {type(est).__name__} holds a sktransfer "
                f"estimator. sktransfer.save supports sktransfer estimators on their "
                f"own or inside Pipeline / FeatureUnion; use joblib.dump for other "
                f"compositions (only load such files from trusted sources)."
            )
        return self._skops(est, where)

    def _container(self, est, kind, field, where):
        params = est.get_params(deep=False)
        parts = [
            [name, self.estimator(step, f"{where}[{name!r}]")]
            for name, step in params.pop(field)
        ]
        encoded = {k: self.value(v, f"{where}.{k}") for k, v in params.items()}
        return {"$": kind, field: parts, "params": encoded}

    def _skops(self, est, where):
        import skops.io as sio

        data = sio.dumps(est)
        untrusted = [
            t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES
        ]
        if untrusted:
            raise TypeError(
                f"cannot save {where} ({type(est).__name__}): it holds types that "
                f"loading would refuse as untrusted: {untrusted}. Use scikit-learn "
                f"estimators, or joblib.dump for files you only load yourself."
            )
        member = f"skops/{len(self.skops)}.skops"
        self.skops[member] = data
        return {
            "$": "skops",
            "member": member,
            "class": f"{type(est).__module__}.{type(est).__qualname__}",
        }

    def _ours(self, est, where):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(est)
        cls = type(est)
        params = {
            k: self.value(v, f"{where} parameter {k!r}")
            for k, v in est.get_params(deep=False).items()
            if not (k == "callbacks" and v is None)
        }
        if est.get_params(deep=False).get("callbacks") is not None:
            warnings.warn(
                f"{where}: callbacks are not saved (they only act during fit); the "
                f"loaded estimator has callbacks=None.",
                UserWarning,
                stacklevel=4,
            )
        state = dict(est.__getstate__())
        state.pop("_sklearn_version", None)
        node = {"$": "sktransfer", "module": cls.__module__, "class": cls.__name__}
        if "backbone_" in state:
            state.pop("backbone_")
            node["backbone"] = self._backbone(est, where)
        if "net_" in state:
            state.pop("net_")
            node["finetuned"] = est._state_out(self.value, where)
        node["params"] = params
        node["state"] = {
            k: self.value(v, f"{where}.{k}")
            for k, v in state.items()
            if k not in _TRANSIENT and not k.startswith("__")
        }
        return node

    def _backbone(self, est, where):
        """Spec + digest for named pretrained weights, else the state dict too."""
        from ._backbones import family_of, load_backbone
        from ._cache import state_digest

        net = est.__dict__.get("backbone_")
        if net is None:  # unpickled and not used since: rebuild it from the spec
            net, _ = load_backbone(est.model, est.weights)
        # the family says whether load() can rebuild the weights from the spec
        named = family_of(est.model).rebuilt_by_name(est.model, est.weights)
        node = {"digest": state_digest(net), "stored": not named}
        if not named:
            node["state_dict"] = {
                k: self.value(t, f"{where}.backbone_[{k!r}]")
                for k, t in net.state_dict().items()
            }
        return node


def save(estimator, path):
    """Save a fitted estimator to one file that loads without pickle.

    Works for the fitted estimators of this package (:class:`CNNFeatureExtractor`,
    :class:`FineTunedClassifier`, :class:`PrototypeClassifier`,
    :class:`CosineSoftmaxClassifier`, ...), and for ``Pipeline`` /
    ``FeatureUnion`` objects combining them with scikit-learn estimators (heads,
    scalers). The file is a zip: a JSON manifest (parameters, fitted attributes
    such as ``classes_`` and ``preprocessing_``, the digest of each network's
    weights, the versions of sktransfer, torch, torchvision, timm, scikit-learn and
    skorch), the tensors and arrays in safetensors, and scikit-learn parts in skops
    format. Pretrained weights named by a string (``weights="imagenet"``) are not
    copied into the file: :func:`load` rebuilds them and checks their digest.

    Parameters
    ----------
    estimator : estimator
        A fitted estimator as described above.
    path : str or path-like
        Where to write; any extension (``.skt`` is a good one).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    TypeError
        When a part cannot be stored without pickle: a network passed as a
        ``torch.nn.Module`` instead of a name, or a type skops would not load.
        ``joblib.dump`` still works for such models (for trusted files only).

    See Also
    --------
    load : read the file back.

    Examples
    --------
    >>> import numpy as np, sktransfer
    >>> from sktransfer import PrototypeClassifier
    >>> clf = PrototypeClassifier().fit(np.eye(4), [0, 0, 1, 1])
    >>> path = sktransfer.save(clf, getfixture("tmp_path") / "proto.skt")
    >>> sktransfer.load(path).predict(np.eye(4)).tolist()
    [0, 0, 1, 1]
    """
    from safetensors.numpy import save as save_arrays
    from safetensors.torch import save as save_tensors

    writer = _Writer()
    tree = writer.estimator(estimator, type(estimator).__name__)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "estimator": tree,
    }
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        manifest["classes"] = writer.value(np.asarray(classes), "classes_")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
        zf.writestr(
            "tensors.safetensors",
            save_tensors(writer.tensors),
            compress_type=zipfile.ZIP_STORED,
        )
        zf.writestr("arrays.safetensors", save_arrays(writer.arrays))
        for member, data in writer.skops.items():
            zf.writestr(member, data)
    tmp.replace(path)
    return path


# =============================================================== reading
class _Reader:
    def __init__(self, zf, source, runtime):
        from safetensors.numpy import load as load_arrays
        from safetensors.torch import load as load_tensors

        self.zf = zf
        self.source = source
        self.runtime = runtime or {}
        self.tensors = load_tensors(zf.read("tensors.safetensors"))
        self.arrays = load_arrays(zf.read("arrays.safetensors"))

    def value(self, j):
        import torch

        if j is None or isinstance(j, (bool, int, float, str)):
            return j
        if isinstance(j, list):
            return [self.value(x) for x in j]
        if not isinstance(j, dict):
            raise ValueError(f"unexpected value {j!r}")
        tag = j["$"]
        if tag == "float":
            if j["v"] not in ("nan", "inf", "-inf"):
                raise ValueError(f"bad float {j['v']!r}")
            return float(j["v"])
        if tag == "npscalar":
            return np.dtype(_safe_dtype(j["dtype"])).type(self.value(j["v"]))
        if tag == "ndarray":
            return np.array(self.arrays[j["key"]])
        if tag == "ndarray_values":
            dtype = np.dtype(_safe_dtype(j["dtype"]))
            values = [self.value(x) for x in j["v"]]
            out = np.empty(len(values), dtype=dtype)
            out[:] = values
            return out.reshape([int(s) for s in j["shape"]])
        if tag == "tensor":
            return self.tensors[j["key"]].clone()
        if tag == "tuple":
            return tuple(self.value(x) for x in j["v"])
        if tag == "set":
            return {self.value(x) for x in j["v"]}
        if tag == "dict":
            return {self.value(k): self.value(x) for k, x in j["v"]}
        if tag == "torch_dtype":
            dtype = getattr(torch, j["v"], None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown torch dtype {j['v']!r}")
            return dtype
        if tag == "torch_device":
            return torch.device(j["v"])
        if tag == "path":
            return str(j["v"])
        if tag == "Preprocessing":
            from ._backbones import Preprocessing

            return Preprocessing(**{k: self.value(x) for k, x in j["v"].items()})
        raise ValueError(f"unknown value tag {tag!r}")

    def estimator(self, node):
        from sklearn.pipeline import FeatureUnion, Pipeline

        if node is None or isinstance(node, str):
            return node
        kind = node["$"]
        if kind in ("Pipeline", "FeatureUnion"):
            cls, field = (
                (Pipeline, "steps")
                if kind == "Pipeline"
                else (FeatureUnion, "transformer_list")
            )
            parts = [(str(name), self.estimator(sub)) for name, sub in node[field]]
            params = {k: self.value(v) for k, v in node["params"].items()}
            return cls(parts, **params)
        if kind == "skops":
            return self._skops(node)
        if kind == "sktransfer":
            return self._ours(node)
        raise ValueError(f"unknown component type {kind!r}")

    def _skops(self, node):
        import skops.io as sio

        member = node["member"]
        data = self.zf.read(member)
        try:
            untrusted = [
                t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES
            ]
        except Exception as exc:  # noqa: BLE001 - not a skops archive at all
            raise ValueError(
                f"component {member} is not a valid skops file "
                f"({type(exc).__name__}); the file was altered or damaged"
            ) from None
        if untrusted:
            raise ValueError(
                f"component {member} holds untrusted types {untrusted}; refusing to "
                f"load them (the file was altered, or written by another tool)"
            )
        return sio.loads(data, trusted=list(TRUSTED_TYPES))

    def _ours(self, node):
        from sklearn.base import BaseEstimator

        module, name = node["module"], node["class"]
        if not _MODULE_RE.match(module):
            raise ValueError(f"class {module}.{name} is not part of sktransfer")
        cls = getattr(importlib.import_module(module), name, None)
        if not (
            isinstance(cls, type)
            and issubclass(cls, BaseEstimator)
            and cls.__module__ == module
        ):
            raise ValueError(f"{module}.{name} is not a sktransfer estimator class")
        params = {k: self.value(v) for k, v in node["params"].items()}
        est = cls(**params)
        _apply_runtime(est, self.runtime)
        state = {k: self.value(v) for k, v in node["state"].items()}
        est.__dict__.update(state)
        if "backbone" in node:
            est.backbone_ = self._backbone(est, node["backbone"])
        if "finetuned" in node:
            est._state_in(self.value, node["finetuned"])
        return est

    def _backbone(self, est, node):
        from ._backbones import _load_state_dict_into, load_backbone
        from ._cache import state_digest

        if node["stored"]:
            net, _ = load_backbone(est.model, None)
            state = {k: self.value(t) for k, t in node["state_dict"].items()}
            _load_state_dict_into(net, state, self.source)
        else:
            net, _ = load_backbone(est.model, est.weights)
        net.eval()
        digest = state_digest(net)
        if digest != node["digest"] and self.runtime.get("check_weights", True):
            raise ValueError(
                f"the weights of {est.model!r} ({est.weights!r}) installed here differ "
                f"from the ones the model in {self.source} was fitted with (digest "
                f"{digest} vs {node['digest']}); its codes would change under the "
                f"fitted head. Install the library versions the file records, or "
                f"refit the model."
            )
        return net


def _apply_runtime(est, runtime):
    """Set device / precision / engine / num_workers where the estimator has them."""
    params = est.get_params(deep=False)
    update = {
        k: v
        for k, v in runtime.items()
        if k in ("device", "precision", "engine", "num_workers")
        and k in params
        and v is not None
    }
    if update:
        est.set_params(**update)


def _safe_dtype(text):
    dtype = np.dtype(str(text))
    if dtype.kind not in "biufUO" or dtype.hasobject and dtype.kind != "O":
        raise ValueError(f"unsupported dtype {text!r}")
    return dtype


# ------------------------------------------------------------------ load
def load(path, *, check_weights=True):
    """Load a model written by :func:`~sktransfer.save`; never unpickles anything.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`sktransfer.save` (or ``sktransfer compare
        --save``).
    check_weights : bool, default=True
        Compare the digest of every network rebuilt here with the one recorded at
        save time, and raise when they differ (other pretrained weights installed,
        e.g. after a library upgrade, would silently change the codes under a
        fitted head).

    Returns
    -------
    estimator : the fitted estimator

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a sktransfer model file, was altered (unknown
        components, untrusted types in a scikit-learn part), or its weights differ
        from the installed ones.

    Warns
    -----
    VersionMismatchWarning
        When the file was written with other versions of sktransfer, torch,
        torchvision, timm, scikit-learn or skorch.

    See Also
    --------
    save : write such a file.
    """
    return _load(path, runtime={"check_weights": check_weights})


def _load(path, runtime=None):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist.")
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{str(path)!r} is not a model file written by sktransfer.save (or "
            f"`sktransfer compare --save`). Pickle / joblib files are not read here "
            f"because loading them can run code; use joblib.load for trusted files."
        )
    source = repr(str(path))
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            if manifest.get("format") != FORMAT:
                raise ValueError("its manifest names another format")
            if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
                raise ValueError(
                    f"format version {manifest['format_version']} is newer than this "
                    f"sktransfer reads ({FORMAT_VERSION}); upgrade sktransfer"
                )
            _check_versions(manifest.get("versions", {}), source)
            reader = _Reader(zf, source, runtime)
            return reader.estimator(manifest["estimator"])
    except ValueError as exc:
        if "do not fit this architecture" in str(exc) or "differ from the ones" in str(
            exc
        ):
            raise
        raise ValueError(f"cannot load {source}: {exc}") from None
    except (KeyError, TypeError, IndexError, AttributeError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"cannot load {source}: the file is damaged or was altered "
            f"({type(exc).__name__}: {exc})."
        ) from None
    except Exception as exc:
        if type(exc).__module__.startswith("safetensors") or "safetensors" in repr(exc):
            raise ValueError(
                f"cannot load {source}: its tensors are not valid safetensors data "
                f"(the file is damaged or was altered)."
            ) from None
        raise


def _check_versions(saved, source):
    here = _versions()
    diff = [
        f"{lib} {saved.get(lib)} (here {here[lib]})"
        for lib in _LIBRARIES
        if saved.get(lib) != here[lib]
    ]
    if diff:
        warnings.warn(
            f"the model in {source} was saved with other library versions: "
            f"{', '.join(diff)}. Check its predictions before relying on them.",
            VersionMismatchWarning,
            stacklevel=4,
        )


def manifest(path):
    """The manifest of a model file as a dict (reads JSON only)."""
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))
