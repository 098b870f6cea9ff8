"""scikit-learn's estimator checks over every public estimator.

Image estimators run on a tiny real timm network with flattened rows read as 1 x d
grayscale images (``input_shape=(1, -1)``) and ``pixel_range=None`` (the checks feed
standardized, negative values, which are not pixels).
"""

import pytest
from conftest import FLAT
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
)

ESTIMATORS = [
    CNNFeatureExtractor(**FLAT),
    # batch_size >= 20: the checks' 20-row sets are predicted in one batch, so a
    # reordered set runs the same convolution kernels (see below).
    FineTunedClassifier(**FLAT, max_epochs=1, batch_size=32, random_state=0),
    PrototypeClassifier(),
    CosineSoftmaxClassifier(),
]
# Why each expected failure is expected (keep this list as short as possible).
# Non-strict xfails hide the rest of their check: each reason says which
# assertion fails and why, and the behaviour is tested elsewhere.
EXPECTED_FAILED = {
    FineTunedClassifier: {
        "check_sample_weight_equivalence_on_dense_data": (
            "mini-batch SGD on a mean loss: weight 2 is not the same as a repeated "
            "row (different batches and steps), only equal in expectation; "
            "test_finetune.py checks class_weight == sample_weight exactly"
        ),
        "check_methods_subset_invariance": (
            "each row is predicted alone (a batch of 1) and within the batch of "
            "20: CPU convolution kernels are picked by batch size and round "
            "differently, so logits move by up to ~5e-6, above this check's 1e-7 "
            "tolerance; it passes on CPUs / thread counts where the kernels "
            "agree. test_finetune.py checks batch invariance to 2e-5"
        ),
    },
}


@pytest.fixture(autouse=True, scope="module")
def _poor_score_on_feature_rows():
    """FineTunedClassifier on feature rows read as 1 x d images is poor_score.

    sklearn's poor_score tag drops two accuracy assertions (> 0.83 training
    accuracy on blobs in check_classifiers_train, > 87% in the up-weighted class
    in check_class_weight_classifiers) that one epoch of a random tiny CNN on
    2-3 "pixels" does not reach (3 epochs at lr=0.01 do, at ~3x the run time);
    the rest of both checks runs. Learning and class weights are tested on
    images in test_finetune.py (held-out accuracy, class_weight ==
    sample_weight). The tag belongs in FineTunedClassifier.__sklearn_tags__
    (when input_shape is set); until it is there, this fixture sets it.
    """
    real = FineTunedClassifier.__sklearn_tags__

    def tags(self):
        tags = real(self)
        if self.input_shape is not None:
            tags.classifier_tags.poor_score = True
        return tags

    mp = pytest.MonkeyPatch()
    mp.setattr(FineTunedClassifier, "__sklearn_tags__", tags)
    yield
    mp.undo()


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED.get(type(est), {})
)
def test_sklearn_conformance(estimator, check):
    check(estimator)
