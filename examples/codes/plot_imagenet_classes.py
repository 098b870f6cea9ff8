"""
A pretrained network, used as it is
====================================

When your classes *are* ImageNet classes, a pretrained network needs no training
at all: run it and read its 1,000-way output (technique 9 of
:ref:`techniques`). :func:`~sktransfer.load_backbone` returns the network with its
preprocessing, and ``CNNFeatureExtractor(layer="classifier")`` returns the
ImageNet logits as features. Here, EfficientNet-Lite0's ImageNet weights (shipped
offline) on scikit-image's bundled photos.

When your classes are *not* ImageNet's, replace the last layer: keep the
penultimate codes (:ref:`sphx_glr_auto_examples_codes_plot_cnn_codes_heads.py`) or
fine-tune a new head of your class count.
"""

import matplotlib.pyplot as plt
import numpy as np
from skimage import data
from timm.data import ImageNetInfo

from sktransfer import CNNFeatureExtractor

names = ["coffee", "chelsea", "astronaut", "rocket"]
photos = [getattr(data, n)() for n in names]  # RGB arrays of different sizes

# A list of arrays of different sizes is a valid X: each is resized to 224 px
# and normalized the way the weights expect (mean 0.5, std 0.5 for these).
imagenet = CNNFeatureExtractor(
    model="efficientnet_lite0", layer="classifier", precision="fp32"
)
logits = imagenet.fit_transform(photos)
proba = np.exp(logits - logits.max(1, keepdims=True))
proba /= proba.sum(1, keepdims=True)

info = ImageNetInfo()  # class names ship with timm: no download
fig, axes = plt.subplots(2, len(photos), figsize=(12, 5.5),
                         gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
for j, (name, photo) in enumerate(zip(names, photos, strict=True)):
    top = np.argsort(proba[j])[::-1][:5]
    axes[0, j].imshow(photo)
    axes[0, j].set_axis_off()
    axes[0, j].set_title(f"skimage.data.{name}()", fontsize=9)
    labels = [info.index_to_description(k).split(",")[0][:22] for k in top]
    axes[1, j].barh(range(5)[::-1], proba[j, top], color="C0")
    axes[1, j].set_yticks(range(5)[::-1])
    axes[1, j].set_yticklabels(labels, fontsize=8)
    axes[1, j].set_xlim(0, 1)
    axes[1, j].set_xlabel("probability", fontsize=8)
    print(f"{name:10s} -> {labels[0]} ({proba[j, top[0]]:.2f})")
fig.suptitle("ImageNet EfficientNet-Lite0, top-5 classes, no training")
fig.tight_layout()
plt.show()

# %%
# The espresso and the cat are ImageNet classes and are recognised with
# confidence. "Astronaut" is not one of the 1,000 classes: the network spreads
# its probability over loosely related ones (the helmet and suit look like a
# bobsledder's or a diver's). Low top-1 confidence is the hint that your classes
# need a new last layer.
