"""ce_lib: softmax and cross-entropy, written to be read next to the formulas.

The companion library of the course *Softmax & Cross-Entropy*. NumPy in,
NumPy out; every loss ``L`` has a closed-form gradient ``L_grad``; names and
defaults follow ``torch.nn.functional`` except that the class axis is
``axis=-1`` by default.
"""

from .calibration import (
    CalibrationBins,
    ECEBootstrap,
    calibration_bins,
    ece_bootstrap,
    expected_calibration_error,
    fit_temperature,
)
from .distillation import distillation_loss, distillation_loss_grad
from .entmax import entmax15, entmax_bisect
from .focal import focal_loss, focal_loss_grad, sigmoid_focal_loss, sigmoid_focal_loss_grad
from .functional import (
    log_sigmoid,
    log_softmax,
    logsumexp,
    sigmoid,
    softmax,
    softmax_jacobian,
    softplus,
)
from .gradcheck import GradcheckResult, gradcheck, numerical_gradient, relative_error
from .losses import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_value_and_grad,
    hinge_loss,
    hinge_loss_grad,
    lse_hinge_loss,
    lse_hinge_loss_grad,
    mse_loss,
    mse_loss_grad,
    multi_margin_loss,
    multi_margin_loss_grad,
    z_loss,
    z_loss_grad,
)
from .margins import (
    am_softmax_loss,
    am_softmax_loss_grad,
    arcface_loss,
    arcface_loss_grad,
    cosine_logits,
    cosine_logits_grad,
)
from .parallel import VocabParallelResult, vocab_parallel_cross_entropy
from .scale import (
    linear_cross_entropy,
    linear_cross_entropy_grad,
    linear_cross_entropy_reference,
    linear_cross_entropy_value_and_grad,
    lse_finalize,
    lse_merge,
    lse_pair,
    online_logsumexp,
)
from .sparsemax import sparsemax, sparsemax_loss, sparsemax_loss_grad

__version__ = "0.1.0"

__all__ = [
    "CalibrationBins",
    "ECEBootstrap",
    "GradcheckResult",
    "VocabParallelResult",
    "am_softmax_loss",
    "am_softmax_loss_grad",
    "arcface_loss",
    "arcface_loss_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "calibration_bins",
    "cosine_logits",
    "cosine_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_value_and_grad",
    "distillation_loss",
    "distillation_loss_grad",
    "ece_bootstrap",
    "entmax15",
    "entmax_bisect",
    "expected_calibration_error",
    "fit_temperature",
    "focal_loss",
    "focal_loss_grad",
    "gradcheck",
    "hinge_loss",
    "hinge_loss_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_grad",
    "linear_cross_entropy_reference",
    "linear_cross_entropy_value_and_grad",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "lse_finalize",
    "lse_hinge_loss",
    "lse_hinge_loss_grad",
    "lse_merge",
    "lse_pair",
    "mse_loss",
    "mse_loss_grad",
    "multi_margin_loss",
    "multi_margin_loss_grad",
    "numerical_gradient",
    "online_logsumexp",
    "relative_error",
    "sigmoid",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_grad",
    "softmax",
    "softmax_jacobian",
    "softplus",
    "sparsemax",
    "sparsemax_loss",
    "sparsemax_loss_grad",
    "vocab_parallel_cross_entropy",
    "z_loss",
    "z_loss_grad",
]
