"""scikit-learn's estimator checks over every public estimator.

Image estimators run on a tiny real timm network with flattened rows read as 1 x d
grayscale images (``input_shape=(1, -1)``) and ``pixel_range=None`` (the checks feed
standardized, negative values, which are not pixels).
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import (
    CNNFeatureExtractor,
    CosineSoftmaxClassifier,
    FineTunedClassifier,
    PrototypeClassifier,
)

TINY_FLAT = {
    "model": "timm/test_efficientnet",
    "weights": None,
    "input_size": 16,
    "input_shape": (1, -1),
    "pixel_range": None,
}

ESTIMATORS = [
    CNNFeatureExtractor(**TINY_FLAT),
    FineTunedClassifier(
        model="timm/test_efficientnet",
        weights=None,
        input_size=16,
        input_shape=(1, -1),
        pixel_range=None,
        max_epochs=1,
        batch_size=16,
        random_state=0,
    ),
    PrototypeClassifier(),
    CosineSoftmaxClassifier(),
]
# Why each expected failure is expected (keep this list as short as possible).
EXPECTED_FAILED = {
    FineTunedClassifier: {
        "check_sample_weight_equivalence_on_dense_data": (
            "mini-batch SGD on a mean loss: weight 2 is not the same as a repeated "
            "row (different batches and steps), only equal in expectation"
        ),
        **dict.fromkeys(
            [
                "check_classifiers_train",
                "check_classifiers_train(readonly_memmap=True)",
                "check_classifiers_train(readonly_memmap=True,X_dtype=float32)",
            ],
            "training accuracy > 0.83 after 1 epoch of a random tiny CNN on blob "
            "features read as 1 x d images; learning is tested on images in "
            "test_finetune.py; fit on lists runs before the assertion",
        ),
        **dict.fromkeys(
            [
                "check_methods_sample_order_invariance",
                "check_methods_subset_invariance",
            ],
            "float32 noise: CPU convolution kernels are picked by batch size and "
            "thread count, so an image's logits move by up to ~5e-6 with the batch it "
            "is predicted in, above these checks' 1e-9 / 1e-7 absolute tolerance "
            "near zero; it passes or fails with the random init. "
            "test_finetune.py checks batch invariance to 2e-5",
        ),
        "check_class_weight_classifiers": (
            "> 87% of predictions in the heavily weighted class after 1 epoch of a "
            "random tiny CNN on blob features; it passed while BatchNorm "
            "statistics were left stale after fit and "
            "fails since fit recomputes them exactly; class_weight is tested on "
            "learnable images in test_finetune.py (class_weight == sample_weight)"
        ),
    },
}


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED.get(type(est), {})
)
def test_sklearn_conformance(estimator, check):
    check(estimator)
