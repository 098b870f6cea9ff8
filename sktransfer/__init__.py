"""sktransfer: scikit-learn compatible transfer learning with pretrained CNNs."""

from ._backbones import Preprocessing, list_layers, load_backbone, offline_backbones
from ._compare import StrategyReport, compare_strategies
from ._extractor import CNNFeatureExtractor
from ._fewshot import CosineSoftmaxClassifier, PrototypeClassifier
from ._finetune import FineTunedClassifier

__version__ = "0.1.0"

__all__ = [
    "CNNFeatureExtractor",
    "CosineSoftmaxClassifier",
    "FineTunedClassifier",
    "Preprocessing",
    "PrototypeClassifier",
    "StrategyReport",
    "__version__",
    "compare_strategies",
    "list_layers",
    "load_backbone",
    "offline_backbones",
]
