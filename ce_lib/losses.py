"""All the classification and regression losses of ``ce_lib``, one module per family.

This module only gathers them under one name (``from ce_lib.losses import ...``
works as before); each family lives in a module short enough to read in one sitting:

* :mod:`ce_lib.categorical`: softmax cross-entropy (class indices or probabilities,
  weights, label smoothing, ignored targets), with its one-pass fast path in
  :mod:`ce_lib._fastpath`;
* :mod:`ce_lib.binary`: binary cross-entropy on probabilities and on logits;
* :mod:`ce_lib.squared`: mean squared error;
* :mod:`ce_lib.hinge`: the multi-class SVM and the hinge -> log-sum-exp chain;
* :mod:`ce_lib.zloss`: the z-loss.

Each loss ``L`` comes with ``L_grad``, which takes the same arguments and
returns the gradient of the *reduced* loss with respect to the first argument
(for ``reduction="none"``, the gradient of the sum of the per-element losses).
"""

from __future__ import annotations

from .binary import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
)
from .categorical import cross_entropy, cross_entropy_grad, cross_entropy_value_and_grad
from .hinge import (
    hinge_loss,
    hinge_loss_grad,
    lse_hinge_loss,
    lse_hinge_loss_grad,
    multi_margin_loss,
    multi_margin_loss_grad,
)
from .squared import mse_loss, mse_loss_grad
from .zloss import z_loss, z_loss_grad

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_value_and_grad",
    "hinge_loss",
    "hinge_loss_grad",
    "lse_hinge_loss",
    "lse_hinge_loss_grad",
    "mse_loss",
    "mse_loss_grad",
    "multi_margin_loss",
    "multi_margin_loss_grad",
    "z_loss",
    "z_loss_grad",
]
