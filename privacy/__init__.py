"""moodfed's one home of differential-privacy math, used by the device SDK and the server."""

from privacy.accounting import (
    Method,
    PrivacyEvent,
    SampledGaussian,
    epsilon_for,
    history_epsilon,
    noise_for_budget,
)
from privacy.budget import Accountant
from privacy.clipping import clip_factors, clip_update, update_norm
from privacy.device import DeviceAccountant
from privacy.errors import BudgetExceededError, PrivacyError
from privacy.mechanisms import (
    add_gaussian_noise,
    calibrate_gaussian_sigma,
    gaussian_epsilon,
    gaussian_noise,
    secure_rng,
)

__all__ = [
    "Accountant",
    "BudgetExceededError",
    "DeviceAccountant",
    "Method",
    "PrivacyError",
    "PrivacyEvent",
    "SampledGaussian",
    "add_gaussian_noise",
    "calibrate_gaussian_sigma",
    "clip_factors",
    "clip_update",
    "epsilon_for",
    "gaussian_epsilon",
    "gaussian_noise",
    "history_epsilon",
    "noise_for_budget",
    "secure_rng",
    "update_norm",
]
