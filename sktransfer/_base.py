"""What the two image estimators share: parameters, input checks, tags, resets.

:class:`_ImageEstimatorMixin` sits left of ``BaseEstimator`` in
:class:`~sktransfer.CNNFeatureExtractor` and :class:`~sktransfer.FineTunedClassifier`.
It owns, once for both:

* the constraints of their common parameters (each estimator merges its own,
  ``{**_ImageEstimatorMixin._parameter_constraints, ...}``, as imbalanced-learn
  does);
* ``_check_X``: images, or a 2-D array of flattened images with ``input_shape``;
* the tags that follow from those inputs;
* the probe check, which turns "this backbone cannot run on these inputs" into a
  ``ValueError`` that names the input size instead of a torch stack trace;
* ``_reset()``, which every ``fit`` calls first: it deletes every fitted and
  derived attribute (engines, exported graphs, digests, ...), so nothing built
  for one model outlives a refit;
* ``_derived()``: the one place for state built on demand after ``fit``
  (inference engines, the device choice, cache specs). It is replaced by every
  ``fit``, pickles empty, and is the same object before and after ``transform``
  / ``predict``, so building an engine lazily does not change the estimator's
  ``__dict__`` (scikit-learn's ``check_dict_unchanged``).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data
from torch import nn

from ._images import RESIZE_MODES, check_images
from ._runtime import ENGINES, PRECISIONS
from ._skops import register_skops_dispatch

__all__ = ["_ImageEstimatorMixin"]


def _is_feature_matrix(X):
    """True for 2-D / 1-D numeric arrays and sparse matrices (not image lists)."""
    if hasattr(X, "tocsr") or hasattr(X, "to_numpy"):
        return True
    if isinstance(X, (list, tuple)):
        return bool(len(X)) and np.ndim(X[0]) == 1
    return isinstance(X, np.ndarray) and X.ndim <= 2


class _Derived(dict):
    """Runtime state derived from a fitted model; empty after unpickling."""

    def __reduce__(self):
        return (_Derived, ())


class _ImageEstimatorMixin:
    """Shared behaviour of the estimators that take images and a backbone."""

    _parameter_constraints = {
        "model": [str, nn.Module],
        "weights": "no_validation",
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "engine": [StrOptions(set(ENGINES))],
        "num_workers": [
            Interval(Integral, 0, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "resize": [StrOptions(set(RESIZE_MODES))],
        "input_shape": [tuple, list, None],
        "pixel_range": [StrOptions({"auto"}), None],
        "verbose": ["verbose"],
    }

    # Instance attributes scikit-learn itself sets (set_output, metadata-routing
    # requests, callbacks and their context, which it sets before calling fit):
    # configuration, not fitted state, so they survive a refit.
    _KEEP_ON_RESET = (
        "_sklearn",
        "_skl_",
        "_metadata_request",
        "_parent_callback",
        "_callback",
    )

    def _reset(self):
        """Forget everything a previous ``fit`` built.

        Deletes every instance attribute that is not a constructor parameter or
        scikit-learn's own configuration: fitted attributes (``classes_``, ``net_``,
        ``backbone_`` ...) and private derived state (inference engines,
        exported graphs, digests, cache specs), whatever their names, so a new
        derived cache cannot be forgotten here.
        """
        params = set(self._get_param_names())
        for name in list(vars(self)):
            if name not in params and not name.startswith(self._KEEP_ON_RESET):
                delattr(self, name)
        self._derived_state = _Derived()

    def _derived(self):
        """The dict of state built on demand for the fitted model (see module doc)."""
        state = self.__dict__.get("_derived_state")
        if state is None:
            state = self._derived_state = _Derived()
        return state

    def _check_X(self, X, reset=False):
        """Validate images; flattened rows (with ``input_shape``) as sklearn does."""
        if self.input_shape is not None and _is_feature_matrix(X):
            # Flattened images: validated like any sklearn feature matrix (sparse,
            # object, complex, 1-D, empty, n_features_in_).
            X = validate_data(self, X, reset=reset, dtype="numeric")
        return check_images(
            X, input_shape=self.input_shape, pixel_range=self.pixel_range
        )

    @staticmethod
    def _probe(forward, preprocessing, n=1, detail=""):
        """Run ``forward`` on ``n`` blank inputs of the configured size.

        Returns its output; a network that cannot take that size (too small for
        its strides, a fixed-size classifier) raises a ValueError naming the size.
        """
        probe = torch.zeros(n, preprocessing.in_chans, *preprocessing.input_size)
        try:
            with torch.inference_mode():
                return forward(probe)
        except RuntimeError as exc:
            raise ValueError(
                f"the backbone cannot run on {preprocessing.input_size} inputs"
                f"{detail} ({str(exc).splitlines()[0][:200]}). Use a larger "
                f"input_size."
            ) from None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = self.input_shape is not None
        tags.input_tags.three_d_array = True
        return tags


register_skops_dispatch(_ImageEstimatorMixin)
