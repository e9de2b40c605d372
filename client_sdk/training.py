"""On-device training: record-level DP-SGD charged to the device's accountant, and the
plain SGD it is compared with.

One DP-SGD step (Abadi et al. 2016, as Opacus runs it) on a batch drawn by Poisson
sampling (each example independently with probability ``q``, the config's
``sample_rate``):

1. the gradient ``g_i`` of each example's squared error, on its own;
2. each scaled by :func:`privacy.clip_factors` to L2 norm at most ``max_grad_norm`` (C);
3. their sum plus Gaussian noise of std ``noise_multiplier * C`` (drawn by
   :func:`privacy.gaussian_noise`), divided by the *expected* batch size ``q * n``;
4. an SGD step on that gradient.

Steps 1-3 are :class:`client_sdk.dpsgd.DPSGD`. ``q`` and the number of steps are
fixed by the config, never derived from the diary: the privacy cost, ``steps``
Poisson-subsampled Gaussians with (noise_multiplier, q), then says nothing about how
many examples a device holds, and every device with the same settings pays the same
(so a device computes its RDP curve once, not once per diary size). It is charged to the
:class:`privacy.DeviceAccountant` before the first step, so an interrupted run is
over-counted, never under-counted; the accountant refuses (raising
:class:`privacy.BudgetExceededError`) training that would pass the device's budget.

Threads: training runs with one intra-op thread (``torch.set_num_threads(1)``) and
restores the caller's setting afterwards. The matrices are tiny (batch x 43 x 32), so a
second thread has nothing to speed up and only adds synchronization; on a two-core
machine it also competes with the app or with the other simulated devices. Measured
here: a small DP-SGD run 6x slower with two threads, and one step (part (a) of
``benchmarks/training_bench.py``) as fast with two threads on an idle second core but
2-5x slower whenever that core is busy.

>>> from client_sdk.model import create_model
>>> from client_sdk.sim.synthetic import SyntheticPopulation
>>> X, y, _ = SyntheticPopulation(3, days=60, seed=1).examples()
>>> config = LocalTrainingConfig(steps=4, sample_rate=0.2, noise_multiplier=1.0)
>>> result = train_locally(create_model(seed=0), X, y, config=config, seed=0)
>>> result.steps, result.epsilon is None
(4, True)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from client_sdk.dpsgd import DPSGD, PerExample
from client_sdk.errors import InvalidArgumentError
from client_sdk.model import get_weights
from client_sdk.policy import DevicePolicy
from client_sdk.protocol import TrainConfig
from privacy import DeviceAccountant, secure_rng

__all__ = [
    "LocalTrainingConfig",
    "LocalTrainingResult",
    "nonprivate_gradients",
    "poisson_batches",
    "single_thread",
    "train_locally",
    "train_nonprivate",
]


@dataclass(frozen=True, slots=True)
class LocalTrainingConfig:
    """How a device trains locally, and its record-level DP-SGD settings.

    Each of the ``steps`` steps draws its batch by Poisson sampling with rate
    ``sample_rate`` (q): the expected batch is ``q * n`` and each example is used about
    ``steps * q`` times. ``noise_multiplier`` is sigma (noise std over ``max_grad_norm``,
    the per-example clipping norm); 0 means no noise and no clipping, i.e. plain SGD
    (:func:`train_nonprivate`), which no accountant accepts. ``delta`` is the delta at
    which the device's epsilon is reported: it must equal its accountant's.

    The defaults suit the synthetic diaries (a hundred to a few hundred examples per
    device): five steps at q = 0.2 (about one pass), plain SGD with learning rate 0.1
    on clipped per-example gradients of the squared error, C = 1.0 (most per-example
    gradient norms of a fresh model are between 1 and 5, so clipping is active but not
    crushing), sigma = 1.0.

    >>> LocalTrainingConfig(steps=10, sample_rate=0.1).expected_batch(256)
    25.6
    """

    steps: int = 5
    sample_rate: float = 0.2
    learning_rate: float = 0.1
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidArgumentError(f"steps must be a positive integer, got {self.steps!r}")
        _check_real("sample_rate", self.sample_rate, positive=True)
        if self.sample_rate > 1:
            raise InvalidArgumentError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        _check_real("learning_rate", self.learning_rate, positive=True)
        _check_real("noise_multiplier", self.noise_multiplier, positive=False)
        _check_real("max_grad_norm", self.max_grad_norm, positive=True)
        if not 0 <= self.momentum < 1:
            raise InvalidArgumentError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.delta < 1:
            raise InvalidArgumentError(f"delta must be in (0, 1), got {self.delta!r}")

    @classmethod
    def from_request(cls, config: TrainConfig, policy: DevicePolicy) -> LocalTrainingConfig:
        """The local training a round's ``train-config`` asks for, under the device's policy:
        the server sets the schedule; the noise is never below the policy's, the clipping
        norm and delta are the policy's."""
        return cls(
            steps=config.local_steps,
            sample_rate=config.sample_rate,
            learning_rate=config.learning_rate,
            noise_multiplier=max(config.device_noise_multiplier, policy.noise_multiplier),
            max_grad_norm=policy.max_grad_norm,
            delta=policy.delta,
        )

    def expected_batch(self, num_examples: int) -> float:
        """The expected batch size q * n: DP-SGD's fixed denominator."""
        _check_count(num_examples)
        return self.sample_rate * num_examples


def _check_real(name: str, value: float, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise InvalidArgumentError(f"{name} must be {kind}, got {value!r}")


def _check_count(num_examples: int) -> None:
    if num_examples < 1:
        raise InvalidArgumentError("training needs at least one example")


@dataclass(frozen=True, slots=True)
class LocalTrainingResult:
    """What local training produced: the new weights and what it cost.

    ``weights`` are the trained model's (``model.state_dict()`` order, float32);
    ``steps`` the optimizer steps taken; ``epsilon`` the device's total record-level
    epsilon after this training (at the accountant's delta), None without an accountant.
    Nothing here depends on the training data except through DP-SGD's noisy steps:
    no loss, no example count.
    """

    weights: list[npt.NDArray[np.float32]]
    steps: int
    epsilon: float | None


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread, then restore the caller's setting.

    See the module docstring for why training uses one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def poisson_batches(
    num_examples: int, *, sample_rate: float, steps: int, rng: np.random.Generator
) -> Iterator[npt.NDArray[np.int64]]:
    """Indices of ``steps`` batches, each example in each independently with ``sample_rate``.

    Batches vary in size and may be empty: that is what DP-SGD's accounting of
    Poisson subsampling assumes (an empty batch still gets its noisy step).

    >>> rng = np.random.default_rng(0)
    >>> [len(b) for b in poisson_batches(1000, sample_rate=0.1, steps=3, rng=rng)]
    [89, 121, 108]
    """
    if not 0 < sample_rate <= 1:
        raise InvalidArgumentError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    for _ in range(steps):
        yield np.flatnonzero(rng.random(num_examples) < sample_rate)


def nonprivate_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Set each parameter's ``.grad`` to the batch's mean squared error gradient.

    The non-private counterpart of :meth:`client_sdk.dpsgd.DPSGD.gradients`: PyTorch's
    autograd, one forward and one backward pass, no clipping, no noise.
    """
    for parameter in model.parameters():
        parameter.grad = None
    torch.autograd.backward(nn.functional.mse_loss(model(x).reshape(-1), y))


def _as_examples(X: npt.ArrayLike, y: npt.ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    features = np.ascontiguousarray(X, dtype=np.float32)
    targets = np.ascontiguousarray(y, dtype=np.float32)
    if features.ndim != 2 or targets.shape != (features.shape[0],):
        raise InvalidArgumentError(
            f"X must be (n, features) and y (n,), got {features.shape} and {targets.shape}"
        )
    _check_count(len(targets))
    if not (np.isfinite(features).all() and np.isfinite(targets).all()):
        raise InvalidArgumentError("X and y must not contain NaN or infinite values")
    return torch.from_numpy(features), torch.from_numpy(targets)


def _optimizer(model: nn.Module, config: LocalTrainingConfig) -> torch.optim.SGD:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(trainable, lr=config.learning_rate, momentum=config.momentum)


def train_locally(
    model: nn.Module,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    config: LocalTrainingConfig,
    accountant: DeviceAccountant | None = None,
    seed: int | None = None,
    per_example: PerExample = "auto",
) -> LocalTrainingResult:
    """Train ``model`` in place on ``(X, y)`` with record-level DP-SGD; return its new weights.

    With an ``accountant``, the whole run (``config.steps`` steps at sampling rate
    ``config.sample_rate`` and ``config.noise_multiplier``) is charged to it first;
    if that would pass the device's budget it raises
    :class:`privacy.BudgetExceededError` and neither the model nor the accountant
    changes. ``result.epsilon`` is then the device's epsilon after the run.

    ``seed`` makes the batches and the noise reproducible, for tests and simulations
    only: a real device leaves it None, and both are drawn from
    :func:`privacy.secure_rng` (seeded from the OS's CSPRNG). ``per_example`` picks
    how per-example gradients are computed (:class:`client_sdk.dpsgd.DPSGD`; the
    result is the same). With ``config.noise_multiplier == 0`` (allowed only without
    an accountant) this is :func:`train_nonprivate`: no clipping, no noise, no privacy.
    """
    features, targets = _as_examples(X, y)
    if accountant is not None:
        if config.noise_multiplier == 0:
            raise InvalidArgumentError("a device accountant needs noise_multiplier > 0")
        if accountant.delta != config.delta:
            raise InvalidArgumentError(
                f"the accountant's delta {accountant.delta:g} differs from the "
                f"config's {config.delta:g}"
            )
    if config.noise_multiplier == 0:
        return train_nonprivate(model, features, targets, config=config, seed=seed)
    n = len(targets)
    sample_rate, steps = config.sample_rate, config.steps
    rng = secure_rng() if seed is None else np.random.default_rng(seed)
    dpsgd = DPSGD(  # refuses an unusable model before anything is charged
        model,
        max_grad_norm=config.max_grad_norm,
        noise_multiplier=config.noise_multiplier,
        expected_batch_size=config.expected_batch(n),
        rng=rng,
        per_example=per_example,
    )
    # Charge first (raises, recording nothing, if over budget); the charge is written to
    # disk while the model trains, and this returns only once it is durable.
    charge = (
        accountant.charging(
            noise_multiplier=config.noise_multiplier, sample_rate=sample_rate, steps=steps
        )
        if accountant is not None
        else contextlib.nullcontext()
    )
    try:
        with charge:
            model.train()
            optimizer = _optimizer(model, config)
            with torch.enable_grad(), single_thread():
                for batch in poisson_batches(n, sample_rate=sample_rate, steps=steps, rng=rng):
                    index = torch.from_numpy(batch)
                    dpsgd.gradients(features[index], targets[index])
                    optimizer.step()
    finally:
        dpsgd.close()
    epsilon = accountant.epsilon() if accountant is not None else None
    return LocalTrainingResult(weights=get_weights(model), steps=steps, epsilon=epsilon)


def train_nonprivate(
    model: nn.Module,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    config: LocalTrainingConfig | None = None,
    seed: int | None = None,
) -> LocalTrainingResult:
    """Plain minibatch SGD on the mean squared error: the non-private baseline.

    The same schedule as :func:`train_locally` (``config.steps`` steps, each on a
    Poisson-sampled batch at ``config.sample_rate``, learning rate and momentum) without
    clipping or noise. Trains ``model`` in place; ``epsilon`` is None.
    """
    config = config if config is not None else LocalTrainingConfig()
    features, targets = _as_examples(X, y)
    n = len(targets)
    rng = np.random.default_rng(seed)
    model.train()
    optimizer = _optimizer(model, config)
    with single_thread():
        for batch in poisson_batches(
            n, sample_rate=config.sample_rate, steps=config.steps, rng=rng
        ):
            if len(batch) == 0:
                continue  # nothing to learn from: the step is skipped, not taken on zeros
            index = torch.from_numpy(batch)
            nonprivate_gradients(model, features[index], targets[index])
            optimizer.step()
    for parameter in model.parameters():
        parameter.grad = None
    return LocalTrainingResult(weights=get_weights(model), steps=config.steps, epsilon=None)
