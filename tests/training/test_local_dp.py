"""On-device DP-SGD: clipping, noise, Poisson batches, the device's budget, and learning."""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from torch import nn

from client_sdk.dpsgd import DPSGD, PerExample
from client_sdk.errors import InvalidArgumentError
from client_sdk.features import FEATURE_DIM
from client_sdk.model import MoodModel, create_model, get_weights, mean_absolute_error
from client_sdk.sim.synthetic import SyntheticPopulation
from client_sdk.training import (
    LocalTrainingConfig,
    poisson_batches,
    train_locally,
    train_nonprivate,
)
from privacy import BudgetExceededError, DeviceAccountant

DELTA = 1e-5
ENGINES: list[PerExample] = ["mlp", "ghost", "vmap"]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def population() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return SyntheticPopulation(30, days=120, seed=11).examples()


@pytest.fixture(scope="module")
def batch(population: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[torch.Tensor, ...]:
    X, y, _ = population
    return torch.from_numpy(X[:12].copy()), torch.from_numpy(y[:12].copy())


def same_weights(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(
        np.array_equal(a, b) for a, b in zip(first, second, strict=True)
    )


def trained_looking_model(seed: int = 0) -> MoodModel:
    """A model with a non-zero output layer, so every layer has gradients of varied size."""
    model = create_model(seed=seed)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


class SkipConnection(nn.Module):
    """Linear layers only, but not a chain: the ghost-norm engine's case."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(FEATURE_DIM, 16)
        self.out = nn.Linear(16, 1)
        self.skip = nn.Linear(FEATURE_DIM, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.out(torch.tanh(self.hidden(x))) + self.skip(x)).squeeze(-1) + 3.7


def with_layer_norm() -> nn.Module:
    """A trainable layer that is not nn.Linear: only the vmap engine can do it."""
    return nn.Sequential(nn.Linear(FEATURE_DIM, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))


def hand_clipped_mean(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_grad_norm: float, divisor: float
) -> tuple[list[torch.Tensor], list[float]]:
    """sum_i clip(g_i) / divisor, one example at a time with plain autograd; and the norms."""
    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    norms = []
    for i in range(len(x)):
        grads = torch.autograd.grad(
            (model(x[i : i + 1]).reshape(-1) - y[i : i + 1]).square().sum(), params
        )
        norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
        norms.append(norm)
        for t, g in zip(total, grads, strict=True):
            t += g.double() * min(1.0, max_grad_norm / norm)
    return [t / divisor for t in total], norms


def dpsgd_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_grad_norm: float,
    divisor: float,
    per_example: PerExample = "auto",
    noise_multiplier: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[list[torch.Tensor], str]:
    with DPSGD(
        model,
        max_grad_norm=max_grad_norm,
        noise_multiplier=noise_multiplier,
        expected_batch_size=divisor,
        rng=rng or np.random.default_rng(0),
        per_example=per_example,
    ) as dpsgd:
        dpsgd.gradients(x, y)
        grads = [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]
        return grads, dpsgd.per_example


def assert_close(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.double(), e.double(), rtol=1e-5, atol=1e-7)


# -- clipping ---------------------------------------------------------------------------


@pytest.mark.parametrize("per_example", ENGINES)
@pytest.mark.parametrize("frozen", [False, True], ids=["all-trained", "first-weight-frozen"])
def test_each_example_gradient_is_clipped_to_the_norm_as_a_hand_computation_says(
    batch: tuple[torch.Tensor, torch.Tensor], per_example: PerExample, frozen: bool
) -> None:
    x, y = batch
    model = trained_looking_model()
    model.layers[0].weight.requires_grad_(not frozen)
    _, norms = hand_clipped_mean(model, x, y, max_grad_norm=1.0, divisor=1.0)
    max_grad_norm = float(np.median(norms))  # half the examples are clipped, half not
    expected, _ = hand_clipped_mean(model, x, y, max_grad_norm=max_grad_norm, divisor=10.0)

    got, used = dpsgd_gradient(
        model, x, y, max_grad_norm=max_grad_norm, divisor=10.0, per_example=per_example
    )

    assert used == per_example
    assert min(norms) < max_grad_norm < max(norms)
    assert_close(got, expected)
    assert model.layers[0].weight.grad is None  # the buffer is handed back on close


@pytest.mark.parametrize(
    ("make_model", "engine"),
    [
        (trained_looking_model, "mlp"),
        (SkipConnection, "ghost"),
        (with_layer_norm, "vmap"),
        (lambda: nn.Sequential(nn.Linear(FEATURE_DIM, 8), nn.ReLU(), nn.Linear(8, 1)), "mlp"),
    ],
    ids=["mood-model", "skip-connection", "layer-norm", "plain-sequential"],
)
def test_each_model_gets_the_fastest_engine_that_fits_it_and_the_same_gradient(
    batch: tuple[torch.Tensor, torch.Tensor], make_model: Callable[[], nn.Module], engine: str
) -> None:
    x, y = batch
    torch.manual_seed(0)
    model = make_model()
    expected, _ = hand_clipped_mean(model, x, y, max_grad_norm=0.5, divisor=12.0)

    got, used = dpsgd_gradient(model, x, y, max_grad_norm=0.5, divisor=12.0)

    assert used == engine
    assert_close(got, expected)


def test_a_mood_model_whose_forward_was_replaced_is_not_given_the_written_out_pass(
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = batch
    model = trained_looking_model()
    doubled = types.MethodType(lambda self, inputs: self.layers(inputs).squeeze(-1) * 2.0, model)
    model.forward = doubled  # type: ignore[method-assign]
    expected, _ = hand_clipped_mean(model, x, y, max_grad_norm=1.0, divisor=12.0)

    got, used = dpsgd_gradient(model, x, y, max_grad_norm=1.0, divisor=12.0)

    assert used == "ghost"
    assert_close(got, expected)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_the_clipped_gradient_is_what_opacus_computes_for_the_same_batch(
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = batch
    model = trained_looking_model(seed=4)
    reference = GradSampleModule(copy.deepcopy(model))
    optimizer = DPOptimizer(
        torch.optim.SGD(reference.parameters(), lr=1.0),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=16,
    )
    nn.functional.mse_loss(reference(x), y).backward()  # Opacus's loss_reduction="mean"
    optimizer.pre_step()  # clip per example, sum, add (zero) noise, divide by 16
    opacus = [p.grad.detach().clone() for p in reference.parameters()]

    ours, _ = dpsgd_gradient(model, x, y, max_grad_norm=1.0, divisor=16.0)

    for mine, theirs in zip(ours, opacus, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("per_example", ENGINES)
def test_an_example_with_a_non_finite_gradient_contributes_nothing(
    batch: tuple[torch.Tensor, torch.Tensor], per_example: PerExample
) -> None:
    x, y = batch
    poisoned = x.clone()
    poisoned[3] = torch.inf
    keep = torch.arange(len(x)) != 3
    model = trained_looking_model()
    expected, _ = dpsgd_gradient(model, x[keep], y[keep], max_grad_norm=1.0, divisor=12.0)

    got, _ = dpsgd_gradient(
        model, poisoned, y, max_grad_norm=1.0, divisor=12.0, per_example=per_example
    )

    assert all(torch.isfinite(g).all() for g in got)
    assert_close(got, expected)


def test_a_model_with_batchnorm_is_refused_before_the_device_is_charged(
    population: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = population[0][:50], population[1][:50]
    model = nn.Sequential(nn.Linear(FEATURE_DIM, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    accountant = DeviceAccountant(tmp_path / "dp.json", epsilon_budget=5.0, delta=DELTA)

    with pytest.raises(InvalidArgumentError, match="BatchNorm1d"):
        train_locally(model, X, y, config=LocalTrainingConfig(), accountant=accountant)

    assert accountant.history == []


# -- noise -------------------------------------------------------------------------------


def test_the_noise_has_std_sigma_times_c_over_the_expected_batch_size() -> None:
    model = create_model(seed=0)
    empty = torch.zeros(0, FEATURE_DIM), torch.zeros(0)  # Poisson can draw an empty batch
    draws = []
    with DPSGD(
        model,
        max_grad_norm=2.0,
        noise_multiplier=1.5,
        expected_batch_size=40,
        rng=np.random.default_rng(5),
    ) as dpsgd:
        for _ in range(20):
            dpsgd.gradients(*empty)
            draws.append(torch.cat([p.grad.flatten() for p in model.parameters()]).double())
    noise = torch.cat(draws)
    expected_std = 1.5 * 2.0 / 40

    assert len(noise) == 20 * sum(p.numel() for p in model.parameters())
    assert float(noise.std()) == pytest.approx(expected_std, rel=0.03)
    assert abs(float(noise.mean())) < 4 * expected_std / math.sqrt(len(noise))
    assert not torch.equal(draws[0], draws[1])


def weight_change(
    X: np.ndarray, y: np.ndarray, config: LocalTrainingConfig, *, seed: int
) -> np.ndarray:
    """-(new - old) / learning_rate of one train_locally call: the gradient it stepped on."""
    model = trained_looking_model()
    before = np.concatenate([w.ravel() for w in get_weights(model)]).astype(np.float64)
    result = train_locally(model, X, y, config=config, seed=seed)
    after = np.concatenate([w.ravel() for w in result.weights]).astype(np.float64)
    return (before - after) / config.learning_rate


def test_one_local_step_moves_the_weights_by_the_clipped_mean_gradient_plus_scaled_noise(
    population: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, y = population[0][:16], population[1][:16]
    # Poisson sampling with rate 1 takes every example, in one step.
    config = LocalTrainingConfig(steps=1, sample_rate=1.0, learning_rate=1.0, max_grad_norm=0.5)
    quiet = LocalTrainingConfig(
        steps=1, sample_rate=1.0, learning_rate=1.0, max_grad_norm=0.5, noise_multiplier=1e-12
    )
    expected, _ = hand_clipped_mean(
        trained_looking_model(), torch.from_numpy(X), torch.from_numpy(y), max_grad_norm=0.5,
        divisor=16.0,
    )  # fmt: skip
    expected_flat = torch.cat([t.flatten() for t in expected]).numpy()

    noises = []
    for seed in range(5):
        clipped = weight_change(X, y, quiet, seed=seed)
        np.testing.assert_allclose(clipped, expected_flat, rtol=1e-4, atol=1e-6)
        noises.append(weight_change(X, y, config, seed=seed) - clipped)
    noise = np.concatenate(noises)

    assert noise.std() == pytest.approx(1.0 * 0.5 / 16, rel=0.05)


# -- Poisson sampling ---------------------------------------------------------------------


def test_poisson_batches_include_each_example_independently_at_the_sample_rate() -> None:
    rng = np.random.default_rng(0)
    batches = list(poisson_batches(2000, sample_rate=0.05, steps=400, rng=rng))
    sizes = np.array([len(b) for b in batches])
    counts = np.bincount(np.concatenate(batches), minlength=2000)

    assert sizes.mean() == pytest.approx(100, abs=2.5)
    assert sizes.var() == pytest.approx(2000 * 0.05 * 0.95, rel=0.25)  # binomial, not fixed
    assert counts.mean() == pytest.approx(400 * 0.05, rel=0.02)
    assert all(len(np.unique(b)) == len(b) for b in batches)


def test_poisson_sampling_can_draw_an_empty_batch() -> None:
    rng = np.random.default_rng(1)

    sizes = [len(b) for b in poisson_batches(10, sample_rate=0.05, steps=50, rng=rng)]

    assert 0 in sizes


def test_the_sampling_rate_and_steps_do_not_depend_on_the_diary() -> None:
    config = LocalTrainingConfig(steps=7, sample_rate=0.125)
    X, y = np.random.default_rng(0).random((64, 43)), np.zeros(64)
    small, large = (
        train_locally(create_model(seed=0), X[:n], y[:n], config=config, seed=0).steps
        for n in (8, 64)
    )

    assert small == large == 7
    assert (config.expected_batch(256), config.expected_batch(16)) == (32.0, 2.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"steps": 0},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"learning_rate": 0.0},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": math.nan},
        {"max_grad_norm": 0.0},
        {"delta": 1.0},
        {"momentum": 1.0},
    ],
)
def test_a_config_with_an_unusable_value_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(InvalidArgumentError):
        LocalTrainingConfig(**settings)  # type: ignore[arg-type]


# -- the device's budget -------------------------------------------------------------------


def opacus_epsilon(history: list[tuple[float, float, int]]) -> float:
    accountant = RDPAccountant()
    for noise_multiplier, sample_rate, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    return accountant.get_epsilon(DELTA)


def test_training_charges_the_device_with_its_poisson_rate_and_steps(
    population: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = population[0][:300], population[1][:300]
    config = LocalTrainingConfig(steps=20, sample_rate=0.1, noise_multiplier=1.1)
    accountant = DeviceAccountant(tmp_path / "dp.json", epsilon_budget=20.0, delta=DELTA)

    first = train_locally(create_model(seed=0), X, y, config=config, accountant=accountant, seed=1)
    second = train_locally(create_model(seed=0), X, y, config=config, accountant=accountant)

    assert first.steps == second.steps == 20
    assert accountant.history == [(1.1, 0.1, 40)]
    # Opacus is an independent RDP implementation; dp-accounting's fractional orders
    # differ from it by up to a few percent (tests/privacy/test_device.py states it).
    assert first.epsilon == pytest.approx(opacus_epsilon([(1.1, 0.1, 20)]), rel=0.03)
    assert second.epsilon == pytest.approx(opacus_epsilon([(1.1, 0.1, 40)]), rel=0.03)
    assert DeviceAccountant(tmp_path / "dp.json", epsilon_budget=20.0, delta=DELTA).history == [
        (1.1, 0.1, 40)
    ]


def test_a_device_that_would_pass_its_budget_refuses_and_keeps_its_weights(
    population: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = population[0][:300], population[1][:300]
    ledger = tmp_path / "dp.json"
    accountant = DeviceAccountant(ledger, epsilon_budget=0.05, delta=DELTA)
    model = trained_looking_model()
    before = get_weights(model)

    with pytest.raises(BudgetExceededError):
        train_locally(model, X, y, config=LocalTrainingConfig(), accountant=accountant)

    assert same_weights(get_weights(model), before)
    assert accountant.history == [] and not ledger.exists()


def test_an_accountant_needs_noise_and_its_own_delta(
    population: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = population[0][:50], population[1][:50]
    accountant = DeviceAccountant(tmp_path / "dp.json", epsilon_budget=5.0, delta=DELTA)

    with pytest.raises(InvalidArgumentError, match="noise_multiplier"):
        train_locally(
            create_model(), X, y, config=LocalTrainingConfig(noise_multiplier=0.0),
            accountant=accountant,
        )  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="delta"):
        train_locally(
            create_model(), X, y, config=LocalTrainingConfig(delta=1e-6), accountant=accountant
        )
    assert accountant.history == []


# -- learning, determinism, threads ------------------------------------------------------------


@pytest.fixture(scope="module")
def split(
    population: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y, owner = population
    train, test = owner < 20, owner >= 20  # held-out people, not held-out days
    return X[train], y[train], X[test], y[test]


def test_training_reduces_the_error_of_an_untrained_model(
    split: tuple[np.ndarray, ...],
) -> None:
    X, y, X_test, y_test = split
    model = create_model(seed=0)
    untrained = mean_absolute_error(model, X_test, y_test)

    config = LocalTrainingConfig(
        steps=3 * len(y) // 32, sample_rate=32 / len(y), learning_rate=0.05
    )
    train_nonprivate(model, X, y, config=config, seed=0)

    assert mean_absolute_error(model, X_test, y_test) < untrained - 0.1


def test_dp_training_with_moderate_noise_still_learns(split: tuple[np.ndarray, ...]) -> None:
    X, y, X_test, y_test = split
    model = create_model(seed=0)
    untrained = mean_absolute_error(model, X_test, y_test)
    config = LocalTrainingConfig(
        steps=5 * len(y) // 64, sample_rate=64 / len(y), noise_multiplier=1.0, max_grad_norm=1.0
    )

    train_locally(model, X, y, config=config, seed=0)

    assert mean_absolute_error(model, X_test, y_test) < untrained - 0.05


def test_training_with_a_seed_is_reproducible_and_other_seeds_differ(
    split: tuple[np.ndarray, ...],
) -> None:
    X, y = split[0][:400], split[1][:400]
    config = LocalTrainingConfig()

    runs = [train_locally(create_model(seed=0), X, y, config=config, seed=s) for s in (3, 3, 4)]

    assert same_weights(runs[0].weights, runs[1].weights)
    assert not np.array_equal(runs[0].weights[0], runs[2].weights[0])


def test_without_a_seed_every_run_draws_fresh_noise(split: tuple[np.ndarray, ...]) -> None:
    X, y = split[0][:100], split[1][:100]

    first, second = (
        train_locally(create_model(seed=0), X, y, config=LocalTrainingConfig()) for _ in range(2)
    )

    assert not np.array_equal(first.weights[0], second.weights[0])


def test_zero_noise_without_an_accountant_is_plain_sgd(split: tuple[np.ndarray, ...]) -> None:
    X, y = split[0][:200], split[1][:200]
    config = LocalTrainingConfig(noise_multiplier=0.0, steps=12)

    private = train_locally(create_model(seed=0), X, y, config=config, seed=9)
    plain = train_nonprivate(create_model(seed=0), X, y, config=config, seed=9)

    assert private.epsilon is None and private.steps == plain.steps == 12
    assert same_weights(private.weights, plain.weights)


def test_frozen_parameters_are_neither_trained_nor_noised(split: tuple[np.ndarray, ...]) -> None:
    X, y = split[0][:200], split[1][:200]
    model = trained_looking_model()
    model.layers[0].bias.requires_grad_(False)
    frozen = model.layers[0].bias.detach().clone()

    result = train_locally(model, X, y, config=LocalTrainingConfig(), seed=0)

    assert torch.equal(model.layers[0].bias, frozen)
    assert np.array_equal(result.weights[1], frozen.numpy())
    assert not np.array_equal(result.weights[0], get_weights(trained_looking_model())[0])


class ThreadRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = create_model(seed=0)
        self.threads: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.threads.append(torch.get_num_threads())
        return self.inner(x)


def test_training_uses_one_thread_and_then_restores_the_callers_setting(
    split: tuple[np.ndarray, ...],
) -> None:
    X, y = split[0][:100], split[1][:100]
    model = ThreadRecorder()
    torch.set_num_threads(2)
    try:
        train_locally(model, X, y, config=LocalTrainingConfig(), seed=0)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(1)

    assert model.threads and set(model.threads) == {1}
    assert after == 2


def test_training_leaves_no_gradients_behind(split: tuple[np.ndarray, ...]) -> None:
    X, y = split[0][:100], split[1][:100]
    model = create_model(seed=0)

    result = train_locally(model, X, y, config=LocalTrainingConfig(), seed=0)

    assert all(p.grad is None for p in model.parameters())
    assert same_weights(result.weights, get_weights(model))


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.zeros((0, FEATURE_DIM)), np.zeros(0), "at least one example"),
        (np.zeros((3, FEATURE_DIM)), np.zeros(2), r"X must be \(n, features\)"),
        (np.full((2, FEATURE_DIM), np.nan), np.zeros(2), "NaN"),
    ],
)
def test_unusable_examples_are_refused(X: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        train_locally(create_model(), X, y, config=LocalTrainingConfig())
