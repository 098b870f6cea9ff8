"""Parameter documentation shared by the fine-tuned estimators (written once).

Filled into their docstrings by :func:`sktransfer._finetune_base.fill_param_docs`
where a line reads ``{{params: name, ...}}``. Each entry is numpydoc text at
zero indentation.
"""

PARAM_DOCS = {
    "model": """\
model : str or torch.nn.Module, default="efficientnet_lite0"
    The backbone, as in :class:`CNNFeatureExtractor`: ``"efficientnet_lite0"``
    (ImageNet weights shipped offline), a torchvision name, ``"timm/<name>"``
    or a module.
""",
    "weights": """\
weights : str, path, enum or None, default="imagenet"
    Pretrained weights (see :func:`sktransfer.load_backbone`); ``None`` trains
    from scratch, so pretrained-vs-scratch is one parameter. The random init
    of ``None`` is the same in every fit and process (``load_backbone``'s
    ``seed=0``); ``random_state`` seeds the head, the split, shuffling,
    augmentation and dropout.
""",
    "input_size": """\
input_size : int or (int, int), default=None
    Training and prediction resolution; ``None`` uses the weights' own size
    (224 for ImageNet weights). Smaller is faster; any size works (the
    networks pool adaptively).
""",
    "train_layers": """\
train_layers : {"auto", "head", "all"}, int or str, default="auto"
    What is trained besides the new head. ``"auto"``: the blocks at the
    network's final resolution after its last downsampling block (see
    "Default policy" below); ``"head"``: nothing (a linear
    probe: the body is frozen); ``"all"``: everything; an int ``k``: the last
    ``k`` stages of the body (``conv_stem, bn1, blocks.0 .. blocks.6,
    conv_head, bn2`` for EfficientNets, ``layer1 .. layer4`` for ResNets);
    a module name (``"blocks.5"``, ``"blocks.5.1"``): that module and
    everything registered after it.
""",
    "bn": """\
bn : {"frozen", "eval", "train", "adabn"}, default="frozen"
    BatchNorm handling. ``"frozen"``: BatchNorm layers in frozen parts run in
    inference mode and their statistics never change (frozen means frozen);
    BatchNorms in trained parts train normally. ``"eval"``: every BatchNorm
    runs in inference mode (good for tiny batches); trained ones still learn
    their scale and shift. ``"train"``: every BatchNorm trains, frozen parts
    included (statistics and scale / shift: "BN-only" fine-tuning with
    ``train_layers="head"``). ``"adabn"``: re-estimate all statistics on the
    training images first (AdaBN, for a domain shift), then as ``"frozen"``.
""",
    "lr": """\
lr : float, default=3e-3
    Learning rate of the head.
""",
    "backbone_lr": """\
backbone_lr : float or None, default=None
    Learning rate of the trained body layers; ``None`` means ``lr / 3``
    (fine-tuning wants a smaller rate than training from scratch), or ``lr``
    with ``layer_decay``.
""",
    "layer_decay": """\
layer_decay : float in (0, 1] or None, default=None
    Layer-wise learning-rate decay (BEiT; timm's ``param_groups_layer_decay``),
    the fine-tuning recipe of vision transformers: a body layer ``k`` layers
    below the head trains at ``backbone_lr * layer_decay ** k``. For a ViT of
    ``n`` blocks, block ``i`` trains at ``backbone_lr * layer_decay ** (n -
    i)`` (the final norm with the last block), the patch / position
    embeddings and class token at ``backbone_lr * layer_decay ** (n + 1)``,
    the head at ``lr``. Layers are timm's ``group_matcher`` groups where the
    network has them (a block of a ViT or EfficientNet), else the stages
    that an int ``train_layers`` counts. ``None``: one rate for the whole body. Off by
    default: no pretrained ViT installs offline, so no default value could
    be measured here (BEiT and MAE fine-tuned ViT-B with 0.65, ViT-L with
    0.75).
""",
    "optimizer": """\
optimizer : {"adamw", "sgd"}, default="adamw"
    AdamW (decoupled weight decay) or SGD with momentum 0.9.
""",
    "scheduler": """\
scheduler : {"cosine", "onecycle"} or None, default="cosine"
    Per-batch learning-rate schedule, restarted when the body is unfrozen.
""",
    "freeze_epochs": """\
freeze_epochs : int, default=0
    Head-first epochs: train only the head for this many epochs first, then
    what ``train_layers`` says (fastai's ``fine_tune``). Not LP-FT, which
    starts the head from the exact linear probe (``head_init="lp"``).
""",
    "max_epochs": """\
max_epochs : int, default=8
    Epochs in all (``freeze_epochs`` included).
""",
    "batch_size": """\
batch_size : int, default=16
    Small batches give small training sets more steps per epoch (measured
    better at 20 images per class; see the user guide).
""",
    "weight_decay": """\
weight_decay : float, default=1e-2
    L2 penalty (a Gaussian prior) on weight matrices and kernels, never on
    BatchNorm parameters or biases.
""",
    "l1": """\
l1 : float, default=0.0
    L1 penalty (a Laplace prior): ``l1 * sum(|w|)`` over the trained weight
    matrices and kernels, added to the mean loss. A weight whose update
    crosses zero is set to exactly zero (truncated gradient), so L1 yields
    exact zeros, as its Laplace prior promises; L2 only shrinks.
""",
    "dropout": """\
dropout : float, default=0.0
    Dropout probability on the features entering the head.
""",
    "drop_path": """\
drop_path : float, default=0.0
    Stochastic depth ("drop layer"): residual blocks are skipped with a
    probability growing linearly with depth up to ``drop_path``. Supported
    where the architecture has the slot (timm EfficientNet / MobileNet /
    ResNet / ConvNeXt / ViT blocks, torchvision ``StochasticDepth``);
    only blocks with a shortcut can be skipped, blocks in frozen parts never
    drop, and a warning says when no trained block can.
""",
    "early_stopping": """\
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the training data (stratified), stop
    when ``monitor`` has not improved for ``patience`` epochs, and restore the
    best epoch's weights (kept in memory: no files, safe with ``n_jobs``).
""",
    "validation_fraction": """\
validation_fraction : float, default=0.1
    Share of the training images held out for early stopping
    (stratified by class when the targets are classes).
""",
    "patience": """\
patience : int, default=3
    Epochs without improvement of ``monitor`` before training stops.
""",
    "augment": """\
augment : "auto", None, str, list of str or callable, default="auto"
    Training-time augmentation. ``"auto"``: ``("translate",)`` (the
    default policy: shifts of up to 10 % of the size; no flips, which change
    what a digit or a letter is); ``"flip"``, ``"light"`` (flip + translate),
    ``"standard"`` (flip + translate + rotate + crop-scale), a list of names
    among ``"flip"``, ``"translate"``, ``"rotate"``, ``"crop_scale"``, or a
    callable on ``(c, h, w)`` float tensors in ``[0, 1]``.
""",
    "augment_views": """\
augment_views : "auto" or int, default="auto"
    With the activation cache (see Notes), augmentation is precomputed:
    ``augment_views`` augmented views of every image go through the frozen
    part once, and each epoch trains on one of them per image, drawn anew.
    ``"auto"`` is 4. Without the cache, every epoch augments afresh and
    this is unused.
""",
    "tta": """\
tta : None, "flip" or int, default=None
    Test-time augmentation of ``predict``, ``predict_proba`` and
    ``decision_function`` (and ``score``): the network's outputs averaged
    over views of each image. ``"flip"``: the image and its mirror image; an
    int ``k``: the image and ``k`` views drawn from the fit's training
    augmentation (``policy_["augment"]``; a model fit without augmentation
    accepts ``"flip"`` only). A view depends on the image's content alone
    (its random draws are seeded by the image's digest), so predictions are
    the same in every call, batch and process. Costs one forward pass per
    view; settable after ``fit`` (``set_params(tta="flip")``). The user
    guide's "Test-time augmentation" has the measured gain and cost.
""",
    "device": """\
device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
    Where training and prediction run; ``"auto"`` is CUDA when available,
    else the CPU.
""",
    "precision": """\
precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
    Training and prediction precision. ``"auto"``: fp32 on the CPU, except
    the training steps of a fit with the activation cache on a CPU with
    native bf16 (AMX / AVX-512 bf16): those run in bf16 autocast with the
    depthwise convolutions in fp32, measured faster and accuracy-neutral
    (see the performance guide); the cache, the head initialisation and
    every prediction stay fp32. On CUDA, bf16 autocast when supported.
    ``policy_["precision"]`` reports what ran. ``"fp32"``: fp32
    everywhere. ``"bf16"`` (autocast + channels_last for everything,
    frozen part and predictions included) is an explicit trade of accuracy
    for speed: for frozen EfficientNet-Lite0 codes it moved them by 8-11%
    (relative L2) and cost 0.9 accuracy points downstream (see
    :class:`CNNFeatureExtractor`); it is emulated (about 10x slower) on
    CPUs without AMX / AVX-512 bf16.
""",
    "engine": """\
engine : {"auto", "onnxruntime", "torch"}, default="auto"
    What runs the fine-tuned network in ``predict`` / ``predict_proba`` /
    ``decision_function`` (training always runs in torch).
    ``"onnxruntime"``: the whole fine-tuned network exported to ONNX once
    per fitted model (seconds; kept on disk by the digest of its weights,
    under ``$SKTRANSFER_CACHE_DIR/onnx``, default
    ``~/.cache/sktransfer/onnx``), checked against the network, then run
    by ONNX Runtime (fp32, CPU). ``"torch"``: the eager network.
    ``"auto"``: ONNX Runtime on the CPU in fp32 once a single call predicts
    at least 256 images (the export then pays for itself), torch before
    that, on CUDA and in reduced precision. A fallback to torch (export
    failure, disagreement, onnxruntime missing) is announced by a warning.
    Every ``fit`` discards the engine of the previous model.
""",
    "num_workers": """\
num_workers : int or "auto", default="auto"
    DataLoader workers decoding images for training and prediction.
    ``"auto"``: workers only for files / PIL images that must be decoded
    again each epoch (more than one core, 32 or more images), as in
    :class:`CNNFeatureExtractor`; none when the training images fit in
    memory or are arrays.
""",
    "resize": """\
resize : {"squash", "crop"}, default="squash"
    How images are brought to ``input_size``, as in
    :class:`CNNFeatureExtractor`.
""",
    "input_shape": """\
input_shape : tuple of int, default=None
    Shape of one image when ``X`` is a 2-D array of flattened images.
""",
    "pixel_range": """\
pixel_range : {"auto"} or None, default="auto"
    ``"auto"``: the dtype decides (uint8 is divided by 255, floats must lie
    in [0, 1]); ``None``: array values are used as they are (already scaled
    or standardized data), as in :class:`CNNFeatureExtractor`.
""",
    "callbacks": """\
callbacks : list of skorch callbacks or None, default=None
    Extra skorch callbacks, e.g. :class:`sktransfer.callbacks.WeightTracker`.
""",
    "cache": """\
cache : None, False, str or path, default=None
    The activation cache (see Notes) lives in this process (RAM, then
    temporary memmap files) whatever this says; a directory (``~``
    expanded) also writes it there, so that other processes (joblib / dask
    workers, later runs) with the same images and network read it instead
    of computing it. ``False`` turns the activation cache off.
""",
    "random_state": """\
random_state : int, RandomState or None, default=None
    Seeds initialization, the validation split, shuffling, augmentation and
    dropout; the same seed and data give the same predictions on the same
    CPU with the same torch thread count (float sums depend on it).
""",
    "verbose": """\
verbose : int, default=0
    1: skorch's epoch table; 2: plus a progress bar per epoch.
""",
}
