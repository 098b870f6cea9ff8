"""Training machinery behind FineTunedClassifier: module, data, skorch net, callbacks.

Private: :class:`~sktransfer.FineTunedClassifier` composes these pieces inside
``fit``. Kept apart from the estimator so each module stays readable.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from skorch import NeuralNetClassifier
from skorch.dataset import unpack_data
from skorch.utils import to_tensor
from torch import nn

from ._backbones import backbone_stages

_BN = nn.modules.batchnorm._BatchNorm
# Resized training images are kept in memory when they fit in this budget, so an
# epoch costs augmentation + forward + backward, not decoding and resizing.
_CACHE_BYTES = 2 * 1024**3


# ------------------------------------------------------------------------ the module
class CosineHead(nn.Module):
    """Cosine-similarity classifier: ``scale * normalize(x) @ normalize(W).T``.

    The few-shot recipe's head: logits depend on directions only, with a
    learnable temperature ``scale``.
    """

    def __init__(self, in_features, out_features, scale=10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x):
        return (
            self.scale
            * F.normalize(x.float(), dim=1)
            @ F.normalize(self.weight, dim=1).T
        )


def build_head(kind, init, n_features, n_classes):
    """A new ``"linear"`` or ``"cosine"`` head; biases start at 0.

    ``init="class_means"`` is applied later, from features (xavier until then).
    """
    if kind == "cosine":
        return CosineHead(n_features, n_classes)
    head = nn.Linear(n_features, n_classes)
    nn.init.zeros_(head.bias)
    if init == "normal":
        nn.init.normal_(head.weight, std=0.01)
    elif init == "zeros":
        nn.init.zeros_(head.weight)
    else:
        nn.init.xavier_uniform_(head.weight)
    return head


def export_state(module, head_name, state_keys):
    """State dict of the fine-tuned network under the original architecture's names.

    The new head takes the old head's place (a cosine head is saved as the linear
    layer ``scale * normalize(W)``, bias 0); keys follow the original order.
    """
    state = {k: v.detach().cpu().clone() for k, v in module.body.state_dict().items()}
    if head_name is not None:
        head = module.head
        if isinstance(head, CosineHead):
            w = head.scale.detach() * F.normalize(head.weight.detach(), dim=1)
            b = torch.zeros(w.shape[0])
        else:
            w = head.weight.detach()
            b = head.bias.detach() if head.bias is not None else None
        state[f"{head_name}.weight"] = w.cpu().clone()
        if b is not None:
            state[f"{head_name}.bias"] = b.cpu().clone()
    order = [k for k in state_keys if k in state]
    order += [k for k in state if k not in order]
    return {k: state[k].contiguous() for k in order}


class FineTuneModule(nn.Module):
    """``head(dropout(body(x)))`` whose ``train()`` keeps frozen parts in eval mode.

    skorch calls ``module.train()`` before every training batch; frozen BatchNorm
    layers must not update their running statistics then, nor should dropout or
    stochastic depth act inside frozen blocks. ``bn`` picks what happens to
    BatchNorm layers: ``"frozen"`` / ``"adabn"`` (eval mode where frozen),
    ``"eval"`` (eval mode everywhere), ``"train"`` (train mode everywhere).
    """

    def __init__(self, body, head, dropout=0.0, bn="frozen"):
        super().__init__()
        self.body = body
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = head
        self.bn = bn
        self.head_only = False  # True during the freeze_epochs phase
        self._frozen_key = None
        self._frozen = []

    def features(self, x):
        out = self.body(x)
        return out.flatten(1) if out.ndim > 2 else out

    def forward(self, x):
        return self.head(self.dropout(self.features(x)))

    def _frozen_modules(self):
        key = tuple(p.requires_grad for p in self.body.parameters())
        if key != self._frozen_key:
            found = []

            def visit(m):
                own = list(m.parameters()) or list(m.buffers())
                if own and not any(p.requires_grad for p in m.parameters()):
                    found.append(m)
                    return
                for child in m.children():
                    visit(child)

            visit(self.body)
            self._frozen_key, self._frozen = key, found
        return self._frozen

    def train(self, mode=True):
        super().train(mode)
        if not mode:
            return self
        if self.head_only:
            self.body.eval()
            return self
        for m in self._frozen_modules():
            m.eval()
        if self.bn in ("eval", "train"):
            for m in self.body.modules():
                if isinstance(m, _BN):
                    m.train(self.bn == "train")
        return self

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_frozen_key"], state["_frozen"] = None, []
        return state


# ---------------------------------------------------------------------- freezing
def resolve_trainable(body, train_layers):
    """Names of body parameters trained under ``train_layers``."""
    names = [n for n, _ in body.named_parameters()]
    if isinstance(train_layers, str) and train_layers in ("head", "all"):
        return set() if train_layers == "head" else set(names)
    stages = [name for name, _ in backbone_stages(body)]
    if isinstance(train_layers, (int, np.integer)) and not isinstance(
        train_layers, bool
    ):
        k = int(train_layers)
        if k < 0 or k > len(stages):
            raise ValueError(
                f"train_layers={k} but this backbone has {len(stages)} stages "
                f"{stages}; use 0..{len(stages)}, 'head' or 'all'."
            )
        start = stages[len(stages) - k] if k else None
    else:
        start = str(train_layers)
        if start not in dict(body.named_modules()) or not start:
            raise ValueError(
                f"train_layers={train_layers!r} is not 'head', 'all', an int or a "
                f"module name of the backbone. Stages: {stages} (an int k trains "
                f"the last k of them); any name of sktransfer.list_layers(model) "
                f"unfreezes from that module on."
            )
    if start is None:
        return set()
    first = next(
        (i for i, n in enumerate(names) if n.startswith(start + ".") or n == start),
        None,
    )
    if first is None:
        raise ValueError(f"module {start!r} has no parameters to train.")
    return set(names[first:])


def set_drop_path(net, rate):
    """Enable stochastic depth ("drop layer") with rates growing linearly to ``rate``.

    Supported: timm residual blocks with a ``drop_path`` slot (EfficientNet,
    MobileNet, ResNet, ConvNeXt, ViT ...) and torchvision ``StochasticDepth``
    modules (EfficientNet, ConvNeXt, Swin). Blocks without a shortcut
    (``has_skip=False``: a stride or a channel change) cannot be skipped and get
    no rate. Returns the names of the blocks that can be dropped, the deepest
    one dropping with probability ``rate``.
    """
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    sites = []
    for name, m in net.named_modules():
        if isinstance(m, StochasticDepth):
            sites.append((name.rpartition(".")[0], m, None))
            continue
        # timm: ``drop_path`` (CNN blocks), ``drop_path1`` / ``drop_path2`` (ViT).
        slots = [
            s
            for s in ("drop_path", "drop_path1", "drop_path2")
            if s in m._modules or (hasattr(m, s) and m.__dict__.get(s, 0) is None)
        ]
        if slots and getattr(m, "has_skip", True):
            sites.append((name, m, slots))
    n = len(sites)
    for i, (_, m, slots) in enumerate(sites):
        p = rate * (i + 1) / n
        if slots is None:
            m.p = p
        else:
            for slot in slots:
                setattr(m, slot, DropPath(p) if p > 0 else nn.Identity())
    return [name for name, _, _ in sites]


def adabn(module, loader, device):
    """Re-estimate every BatchNorm's running statistics on the target data (AdaBN)."""
    recalibrate_bn(module, loader, device)


def trained_bns(module):
    """BatchNorm layers whose statistics training updates (after the freeze phase)."""
    head_only = module.head_only
    module.head_only = False
    module.train()
    found = [m for m in module.body.modules() if isinstance(m, _BN) and m.training]
    module.head_only = head_only
    module.eval()
    return found


def recalibrate_bn(module, loader, device, bns=None):
    """Set BatchNorm running statistics to exact averages over ``loader``.

    Training keeps an exponential moving average (momentum 0.1) of batch
    statistics, so after a few steps of fine-tuning -- or from random weights --
    the statistics still reflect the old data or the initial ones, and eval-mode
    predictions collapse. One pass over the training images with cumulative
    averaging (as SWA's ``update_bn`` does) fixes them for the final weights.
    ``bns`` limits the pass to some layers (default: all of the body's).
    """
    if bns is None:
        bns = [m for m in module.body.modules() if isinstance(m, _BN)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    module.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    with torch.no_grad():
        for x, _ in loader:
            module.body(x["x"].to(device))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    module.eval()


@torch.no_grad()
def frozen_features(module, loader, device):
    module.eval()
    feats, ys = [], []
    for x, y in loader:
        feats.append(module.features(x["x"].to(device)).float().cpu())
        ys.append(y)
    return torch.cat(feats), torch.cat(ys)


# -------------------------------------------------------------------------- data
class ImageDataset(torch.utils.data.Dataset):
    """Items ``({"x": image, "sample_weight": w}, y)`` for skorch.

    ``cache`` holds the resized ``[0, 1]`` images when they fit in memory;
    otherwise each item is decoded and resized on access. ``transform`` (the
    augmentation) runs before normalization, per sample.
    """

    def __init__(self, images, pre, y=None, sample_weight=None, transform=None):
        self.images = images
        self.pre = pre
        self.y = y
        self.sample_weight = sample_weight
        self.transform = transform
        self.cache = None
        c, (h, w) = pre.p.in_chans, pre.p.input_size
        if len(images) * c * h * w * 4 <= _CACHE_BYTES:
            chunks = []
            for start in range(0, len(images), 256):
                idx = range(start, min(start + 256, len(images)))
                chunks.append(pre.load_batch(images, idx))
            self.cache = torch.cat(chunks).contiguous()
        self.X = self.cache if self.cache is not None else images  # skorch's view

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.cache[i] if self.cache is not None else self.pre.load(self.images, i)
        if self.transform is not None:
            x = self.transform(x)
        x = self.pre.normalize(x[None])[0]
        item = {"x": x}
        if self.sample_weight is not None:
            item["sample_weight"] = torch.tensor(self.sample_weight[i])
        return item, (int(self.y[i]) if self.y is not None else 0)

    def with_transform(self, transform):
        """A shallow copy that shares the cache but augments differently."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def subset(self, idx):
        """A shallow copy restricted to ``idx`` (the cache is sliced, not rebuilt)."""
        other = copy.copy(self)
        idx = np.asarray(idx)
        other.images = self.images.subset(idx)
        other.cache = None if self.cache is None else self.cache[idx]
        other.X = other.cache if other.cache is not None else other.images
        other.y = None if self.y is None else self.y[idx]
        if self.sample_weight is not None:
            other.sample_weight = self.sample_weight[idx]
        return other


def make_loader(
    dataset, batch_size, shuffle=False, seed=0, num_workers=0, drop_last=False
):
    """DataLoader whose shuffling (and worker seeds) follow ``seed``.

    A factory (not a Generator object in skorch's params) so fitted nets pickle.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
    )


# -------------------------------------------------------------------- loss / net
class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with label smoothing and per-sample weights (weighted mean)."""

    def __init__(self, label_smoothing=0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits, y, weight=None):
        ce = F.cross_entropy(
            logits.float(), y, reduction="none", label_smoothing=self.label_smoothing
        )
        if weight is None:
            return ce.mean()
        weight = weight.to(ce)
        return (ce * weight).sum() / weight.sum().clamp_min(1e-12)


def softmax(logits):
    return torch.softmax(logits, dim=-1)


class FineTuneNet(NeuralNetClassifier):
    """skorch net with discriminative LRs, L1, sample weights and autocast.

    ``ft`` (a plain dict) carries what skorch has no parameter for: the names of
    trainable body parameters, head / body learning rates, weight decay, the L1
    strength, the autocast dtype and channels_last.
    """

    def __init__(self, *args, ft=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ft = ft

    # ---- optimizer: only trainable tensors; no decay on BN, bias, scale
    def initialize_optimizer(self, triggered_directly=None):
        ft = self.ft
        trainable = ft["trainable"]
        groups = {}
        for name, p in self.module_.named_parameters():
            if name.startswith("body."):
                if name[len("body.") :] not in trainable:
                    continue
                lr, part = ft["backbone_lr"], "body"
            else:
                lr, part = ft["lr"], "head"
            decay = p.ndim > 1
            key = (part, decay)
            if key not in groups:
                groups[key] = {
                    "params": [],
                    "lr": lr,
                    "base_lr": lr,
                    "weight_decay": ft["weight_decay"] if decay else 0.0,
                    "name": f"{part}{'' if decay else '_no_decay'}",
                }
            groups[key]["params"].append(p)
        if ft["optimizer"] == "sgd":
            opt = torch.optim.SGD(list(groups.values()), lr=ft["lr"], momentum=0.9)
        else:
            opt = torch.optim.AdamW(list(groups.values()), lr=ft["lr"])
        self.optimizer_ = opt
        self.l1_params_ = [
            g for k, grp in groups.items() if k[1] for g in grp["params"]
        ]
        return self

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        weight = X.get("sample_weight") if isinstance(X, Mapping) else None
        loss = self.criterion_(y_pred, y_true, weight)
        l1 = self.ft["l1"]
        if training and l1:
            penalty = sum(p.abs().sum() for p in self.l1_params_ if p.requires_grad)
            loss = loss + l1 * penalty
        return loss

    def _autocast(self):
        dtype = self.ft["autocast"]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    def infer(self, x, **fit_params):
        x = to_tensor(x, device=self.device)
        img = x["x"] if isinstance(x, Mapping) else x
        if self.ft["channels_last"]:
            img = img.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return self.module_(img).float()

    def train_step(self, batch, **fit_params):
        if self.ft["l1"]:
            # Subgradient steps on |w| alone make weights oscillate around 0 and
            # never reach it. So a weight whose step crosses zero is clipped to
            # exactly 0 (truncated gradient, Tsuruoka et al. 2009), and a weight at
            # 0 stays there while |data gradient| <= l1 (0 is then optimal).
            l1 = self.ft["l1"]
            params = [p for p in self.l1_params_ if p.requires_grad]
            signs = [torch.sign(p.detach()) for p in params]
            step = self._train_step(batch, **fit_params)
            with torch.no_grad():
                for p, s in zip(params, signs, strict=True):
                    crossed = torch.sign(p) * s < 0
                    if p.grad is not None:
                        crossed |= (s == 0) & (p.grad.abs() <= l1)
                    p.masked_fill_(crossed, 0.0)
            return step
        return self._train_step(batch, **fit_params)

    def _train_step(self, batch, **fit_params):
        if self.ft["autocast"] is not torch.float16:
            return super().train_step(batch, **fit_params)
        # fp16 needs loss scaling against gradient underflow
        scaler = self.__dict__.get("grad_scaler_")
        if scaler is None:
            scaler = self.grad_scaler_ = torch.amp.GradScaler("cuda")
        self._zero_grad_optimizer()
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        scaler.step(self.optimizer_)
        scaler.update()
        return {"loss": loss, "y_pred": y_pred}
