"""moodfed's one home of differential-privacy math, used by the device SDK and the server."""

from privacy.accounting import (
    MechanismKey,
    Method,
    PrivacyEvent,
    SampledGaussian,
    SampledSkellam,
    epsilon_for,
    history_epsilon,
    mechanism_rdp,
    noise_for_budget,
)
from privacy.budget import Accountant
from privacy.calibration import noise_multiplier_for
from privacy.clipping import clip_factors, clip_update, update_norm
from privacy.device import DeviceAccountant
from privacy.distributed import DistributedSkellam, skellam_event_rdp, skellam_noise_for_budget
from privacy.errors import BudgetExceededError, PrivacyError
from privacy.mechanisms import (
    add_gaussian_noise,
    calibrate_gaussian_sigma,
    gaussian_epsilon,
    gaussian_noise,
    secure_rng,
)
from privacy.rdp import RDP_ORDERS, RdpCurve, event_rdp, rdp_epsilon, sampled_gaussian_rdp
from privacy.subsampled_rdp import symmetric_subsampled_rdp
from privacy.thresholds import (
    DEFAULT_FALSE_RELEASE_BOUND,
    DEFAULT_MIN_CONTRIBUTORS,
    release_threshold,
)

__all__ = [
    "DEFAULT_FALSE_RELEASE_BOUND",
    "DEFAULT_MIN_CONTRIBUTORS",
    "RDP_ORDERS",
    "Accountant",
    "BudgetExceededError",
    "DeviceAccountant",
    "DistributedSkellam",
    "MechanismKey",
    "Method",
    "PrivacyError",
    "PrivacyEvent",
    "RdpCurve",
    "SampledGaussian",
    "SampledSkellam",
    "add_gaussian_noise",
    "calibrate_gaussian_sigma",
    "clip_factors",
    "clip_update",
    "epsilon_for",
    "event_rdp",
    "gaussian_epsilon",
    "gaussian_noise",
    "history_epsilon",
    "mechanism_rdp",
    "noise_for_budget",
    "noise_multiplier_for",
    "rdp_epsilon",
    "release_threshold",
    "sampled_gaussian_rdp",
    "secure_rng",
    "skellam_event_rdp",
    "skellam_noise_for_budget",
    "symmetric_subsampled_rdp",
    "update_norm",
]
