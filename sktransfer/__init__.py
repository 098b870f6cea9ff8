"""sktransfer: scikit-learn compatible transfer learning with pretrained CNNs.

The public names are imported on first use (PEP 562), so ``import sktransfer``
and the ``sktransfer`` command's ``--help`` do not import torch.
"""

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "CNNFeatureExtractor": "._extractor",
    "CosineSoftmaxClassifier": "._fewshot",
    "FineTunedClassifier": "._finetune",
    "FineTunedRegressor": "._regressor",
    "Preprocessing": "._backbones",
    "PrototypeClassifier": "._fewshot",
    "StrategyReport": "._compare",
    "compare_strategies": "._compare",
    "export_onnx": "._export",
    "list_layers": "._backbones",
    "load": "._persistence",
    "load_backbone": "._backbones",
    "offline_backbones": "._backbones",
    "save": "._persistence",
}

# subpackages reachable as attributes, imported on first use too
_SUBMODULES = ("callbacks", "datasets", "model_selection")

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sktransfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
