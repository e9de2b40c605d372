"""The device's record-level accountant: persistence, file mode, refusal, Opacus parity."""

from __future__ import annotations

import stat
import warnings
from pathlib import Path

import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from torch.utils.data import DataLoader, TensorDataset

from privacy import BudgetExceededError, DeviceAccountant, PrivacyError

from .conftest import DELTA


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "device" / "dp-sgd.json"


def opacus_epsilon(steps: list[tuple[float, float, int]]) -> float:
    accountant = RDPAccountant()
    for noise_multiplier, sample_rate, count in steps:
        for _ in range(count):
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    return accountant.get_epsilon(DELTA)


def test_spending_persists_across_instances(ledger_path: Path) -> None:
    first = DeviceAccountant(ledger_path, epsilon_budget=10.0, delta=DELTA)
    first.record(noise_multiplier=1.1, sample_rate=0.02, steps=50)
    first.record(noise_multiplier=1.1, sample_rate=0.02, steps=30)
    first.record(noise_multiplier=0.9, sample_rate=0.05, steps=10)

    second = DeviceAccountant(ledger_path, epsilon_budget=10.0, delta=DELTA)

    assert second.history == [(1.1, 0.02, 80), (0.9, 0.05, 10)]
    assert second.epsilon() == first.epsilon() > 0


def test_the_ledger_file_is_readable_by_its_owner_only(ledger_path: Path) -> None:
    device = DeviceAccountant(ledger_path, epsilon_budget=10.0, delta=DELTA)
    device.record(noise_multiplier=1.0, sample_rate=0.01, steps=10)
    device.record(noise_multiplier=1.0, sample_rate=0.01, steps=10)

    assert stat.S_IMODE(ledger_path.stat().st_mode) == 0o600
    assert [p.name for p in ledger_path.parent.iterdir()] == [ledger_path.name]  # no temp left


def test_the_epsilon_is_opacus_rdp_accountants_for_the_same_history(ledger_path: Path) -> None:
    steps = [(1.1, 0.01, 300), (0.8, 0.02, 120), (1.1, 0.01, 40)]
    device = DeviceAccountant(ledger_path, epsilon_budget=50.0, delta=DELTA)
    for noise_multiplier, sample_rate, count in steps:
        device.record(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=count)

    assert device.epsilon() == pytest.approx(opacus_epsilon(steps), rel=1e-12)


def test_a_device_refuses_training_that_would_pass_its_budget(ledger_path: Path) -> None:
    device = DeviceAccountant(ledger_path, epsilon_budget=2.0, delta=DELTA)
    recorded = 0
    with pytest.raises(BudgetExceededError):
        while True:
            device.record(noise_multiplier=1.0, sample_rate=0.01, steps=50)
            recorded += 50
    saved = ledger_path.read_bytes()

    assert recorded >= 500 and device.epsilon() <= 2.0
    assert device.would_exceed(noise_multiplier=1.0, sample_rate=0.01, steps=50)
    assert ledger_path.read_bytes() == saved
    assert DeviceAccountant(ledger_path, epsilon_budget=2.0, delta=DELTA).history == [
        (1.0, 0.01, recorded)
    ]


def test_a_device_is_exhausted_when_not_one_more_step_fits(ledger_path: Path) -> None:
    device = DeviceAccountant(ledger_path, epsilon_budget=0.5, delta=DELTA)
    assert not device.exhausted
    steps = 1024
    while steps:  # fill the budget one halving at a time, down to single steps
        try:
            device.record(noise_multiplier=2.0, sample_rate=0.05, steps=steps)
        except BudgetExceededError:
            steps //= 2

    assert device.exhausted
    assert device.epsilon() <= 0.5
    assert device.would_exceed(noise_multiplier=2.0, sample_rate=0.05, steps=1)


def test_a_corrupt_ledger_is_an_error_not_a_fresh_budget(ledger_path: Path) -> None:
    ledger_path.parent.mkdir(parents=True)
    ledger_path.write_text('{"version": 1, "mechanism": "rdp", "history": [[1.0, "x"]]}')

    with pytest.raises(PrivacyError, match="unreadable"):
        DeviceAccountant(ledger_path, epsilon_budget=1.0, delta=DELTA)


def test_recording_opacus_dp_sgd_gives_the_privacy_engines_epsilon(ledger_path: Path) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 4), torch.randint(0, 2, (256,)))
    model = torch.nn.Linear(4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Secure RNG turned off": fine for a test
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(data, batch_size=32),
            noise_multiplier=1.2,
            max_grad_norm=1.0,
        )
    device = DeviceAccountant(ledger_path, epsilon_budget=10.0, delta=DELTA)
    device.record(
        noise_multiplier=optimizer.noise_multiplier,
        sample_rate=1 / len(loader),
        steps=len(loader),
    )  # charged before the epoch runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's notes on hooks
        for features, labels in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(features), labels).backward()
            optimizer.step()

    assert device.epsilon() == pytest.approx(engine.get_epsilon(DELTA), rel=1e-12)
