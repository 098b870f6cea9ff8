"""Learning order of the examples inside each gallery section.

sphinx-gallery imports this class by name (``within_subsection_order`` in
``conf.py``), so the config stays picklable. An example missing from ``ORDER``
(a new one from another branch) still appears, after the listed ones, by name.
"""

ORDER = [
    # 1. CNN codes
    "plot_imagenet_classes.py",
    "plot_cnn_codes_heads.py",
    "plot_which_layer.py",
    "plot_feature_union.py",
    # 2. fine-tuning
    "plot_finetune_strategies.py",
    "plot_early_stopping.py",
    "plot_l1_vs_l2.py",
    "plot_dropout_drop_path.py",
    "plot_augmentation.py",
    "plot_data_size_scenarios.py",
    # 3. few-shot
    "plot_fewshot.py",
    # 4. experiments
    "plot_initialization.py",
    "plot_layer_convergence.py",
    "plot_autoencoder_pretraining.py",
    # 5. deployment
    "plot_export_onnx.py",
    "onnx_client.py",
    # 6. targets
    "plot_regression.py",
    "plot_multilabel.py",
]


class LearningOrder:
    """Sort key: position in ``ORDER``, then file name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        rank = ORDER.index(filename) if filename in ORDER else len(ORDER)
        return (rank, filename)

    def __repr__(self):
        return f"<{type(self).__name__}>"
