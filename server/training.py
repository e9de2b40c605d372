"""Consent-gated DP-FedAvg, one round as stages: gate, charge, sample, send, aggregate, publish.

Each stage has one job (as a Flower Strategy's ``configure_train`` and
``aggregate_train`` do):

1. **gate**: ask the consent service which attested devices may train now; any failure
   stops the run (no round on unchecked devices), and no eligible device ends it;
2. **charge**: q = expected / eligible; stop before the round if it would take any
   eligible user past the budget (the hard stop), else charge every eligible user,
   sampled or not (the amplification argument covers them all, and the charge must not
   depend on the secret sample);
3. **sample**: Poisson sampling (:mod:`server.sampling`);
4. **send**: the global model and the ``train-config`` to the sampled devices only;
   collect well-formed updates;
5. **aggregate**: DP-FedAvg (:mod:`server.aggregation`): clipped sum, noise, divided by
   the expected count;
6. **publish**: evaluate on the server's own held-out data and record the round with its
   (epsilon, delta): the largest spend of any user eligible in some round of this run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from client_sdk.protocol import (
    GLOBAL_MODEL_RECORD,
    TRAIN_CONFIG_RECORD,
    TRAIN_MESSAGE_TYPE,
    TRAINING_PURPOSE,
)
from privacy import Accountant, BudgetExceededError, PrivacyEvent
from server.aggregation import next_global, parse_update
from server.attestation import Attestations
from server.eligibility import EligibilitySource
from server.errors import RunStopped
from server.evaluation import HoldoutSet
from server.messaging import exchange
from server.observers import RunObserver
from server.releases import ReleaseStore
from server.sampling import poisson_sample, round_rng
from server.settings import TrainSettings

__all__ = [
    "RoundPlan",
    "RoundReport",
    "TrainingRound",
    "TrainingRun",
    "initial_weights",
    "model_name",
]

log = logging.getLogger(__name__)

_SAMPLING_STREAM = 0
_NOISE_STREAM = 1


@dataclass(frozen=True, slots=True)
class RoundReport:
    """One round as the server saw it. ``sampled`` and ``contributed`` are server-internal
    (they depend on the secret sample) and are never released."""

    round: int
    eligible: tuple[str, ...]
    sampling_rate: float
    expected_count: float
    sampled: tuple[str, ...]
    contributed: int
    epsilon: float
    delta: float
    holdout_mae: float | None
    release_id: int
    seconds: float


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """What the gate and the charge decided, before anything is sent."""

    number: int
    eligible: tuple[str, ...]
    sampling_rate: float
    expected_count: float


@dataclass
class TrainingRun:
    """What every round of one run shares: where to send, whom to ask, where to record."""

    grid: Grid | None
    settings: TrainSettings
    eligibility: EligibilitySource
    accountant: Accountant
    store: ReleaseStore
    attestations: Attestations
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    holdout: HoldoutSet | None = None
    observers: Sequence[RunObserver] = ()
    contributors: set[str] = field(default_factory=set)
    """Every user eligible in some round so far: whose data the next model may reflect."""


@dataclass
class TrainingRound:
    """One round's stages over its run (see the module docstring)."""

    run: TrainingRun
    number: int

    def gate(self) -> tuple[str, ...]:
        """The attested devices whose ledger record for model training is a grant now."""
        node_for = self.run.attestations.node_for()
        answer = set(self.run.eligibility.eligible(TRAINING_PURPOSE, list(node_for)))
        # Sorted by key, not by node id: node ids are random, keys are stable, so a seeded
        # (test) run samples the same devices every time.
        eligible = tuple(sorted(key for key in node_for if key in answer))
        if not eligible:
            raise RunStopped("stopped", f"no eligible devices before round {self.number}")
        return eligible

    def charge(self, eligible: tuple[str, ...]) -> RoundPlan:
        """The hard stop, then the charge of every eligible user (charge, then spend: a crash
        in between over-counts, never under-counts)."""
        settings = self.run.settings
        q = settings.sampling_rate(eligible=len(eligible))
        event = PrivacyEvent.training_round(
            sampling_rate=q, noise_multiplier=settings.noise_multiplier
        )
        refused = self.run.accountant.would_exceed(eligible, event)
        if refused:
            raise RunStopped(
                "stopped",
                f"privacy budget: round {self.number} would take {len(refused)} user(s) past "
                f"epsilon={settings.epsilon_budget:g} (delta={settings.delta:g}); "
                "stopped before it",
            )
        try:  # the charge re-checks the budget in its own transaction
            self.run.accountant.charge(
                eligible,
                event,
                purpose=TRAINING_PURPOSE,
                release_id=f"{self.run.run_id}/round-{self.number}",
            )
        except BudgetExceededError as error:
            raise RunStopped("stopped", f"privacy budget (at charge time): {error}") from None
        return RoundPlan(self.number, eligible, q, q * len(eligible))

    def sample(self, plan: RoundPlan) -> tuple[str, ...]:
        """Each eligible device independently with probability q (CSPRNG unless seeded)."""
        rng = round_rng(self.run.settings.seed, self.number, stream=_SAMPLING_STREAM)
        return tuple(poisson_sample(plan.eligible, rate=plan.sampling_rate, rng=rng))

    def send(self, sampled: Sequence[str], weights: list[np.ndarray]) -> list[list[np.ndarray]]:
        """The model and this round's config to the sampled devices; their well-formed updates."""
        node_for = self.run.attestations.node_for()
        nodes = {node_for[key] for key in sampled}
        content = RecordDict(
            {
                GLOBAL_MODEL_RECORD: ArrayRecord(weights),
                TRAIN_CONFIG_RECORD: self.run.settings.train_config(self.number).to_record(),
            }
        )
        messages = [
            Message(
                content,
                dst_node_id=node_id,
                message_type=TRAIN_MESSAGE_TYPE,
                group_id=str(self.number),
            )
            for node_id in sorted(nodes)
        ]
        if self.run.grid is None:
            raise ValueError("this run has no grid to send on")
        updates: dict[int, list[np.ndarray]] = {}
        replies = exchange(
            self.run.grid,
            messages,
            timeout=self.run.settings.round_timeout,
            phase=f"round {self.number}",
            observers=self.run.observers,
        )
        for reply in replies:
            source = reply.metadata.src_node_id
            if source not in nodes or source in updates:
                continue
            update = parse_update(reply, weights)
            if update is not None:
                updates[source] = update
        return list(updates.values())

    def aggregate(
        self, plan: RoundPlan, weights: list[np.ndarray], updates: Sequence[Sequence[np.ndarray]]
    ) -> list[np.ndarray]:
        """DP-FedAvg: the failed and the silent contribute zero; noise and denominator fixed."""
        seed = self.run.settings.seed
        rng = None if seed is None else round_rng(seed, self.number, stream=_NOISE_STREAM)
        return next_global(
            weights,
            updates,
            clipping_norm=self.run.settings.clipping_norm,
            noise_multiplier=self.run.settings.noise_multiplier,
            expected_count=plan.expected_count,
            rng=rng,
        )

    def publish(
        self,
        plan: RoundPlan,
        *,
        weights: list[np.ndarray],
        sampled: tuple[str, ...],
        contributed: int,
        started: float,
    ) -> RoundReport:
        """Record the model with its privacy cost, DP-safe counts and the server's metric."""
        run, settings = self.run, self.run.settings
        run.contributors.update(plan.eligible)
        epsilon = run.accountant.max_epsilon(run.contributors)
        holdout = run.holdout
        mae = holdout.mae(weights) if holdout is not None else None
        release_id = run.store.record_model_round(
            run_id=run.run_id,
            round_number=self.number,
            weights=weights,
            epsilon=epsilon,
            delta=settings.delta,
            sampling_rate=plan.sampling_rate,
            noise_multiplier=settings.noise_multiplier,
            clipping_norm=settings.clipping_norm,
            eligible_devices=len(plan.eligible),
            expected_devices=plan.expected_count,
            holdout_mae=mae,
            holdout_devices=holdout.devices if holdout is not None else None,
            holdout_examples=holdout.examples if holdout is not None else None,
        )
        log.info(
            "Round %s published: %d eligible, q=%.4g, epsilon=%.4g, holdout MAE %s",
            self.number,
            len(plan.eligible),
            plan.sampling_rate,
            epsilon,
            "n/a" if mae is None else f"{mae:.4f}",
        )
        return RoundReport(
            round=self.number,
            eligible=plan.eligible,
            sampling_rate=plan.sampling_rate,
            expected_count=plan.expected_count,
            sampled=sampled,
            contributed=contributed,
            epsilon=epsilon,
            delta=settings.delta,
            holdout_mae=mae,
            release_id=release_id,
            seconds=time.monotonic() - started,
        )

    def __call__(self, weights: list[np.ndarray]) -> tuple[RoundReport, list[np.ndarray]]:
        """Run the stages in order; the next global model and what was published."""
        started = time.monotonic()
        for observer in self.run.observers:
            observer.before_round(self.number)
        plan = self.charge(self.gate())
        sampled = self.sample(plan)
        updates = self.send(sampled, weights)
        new_weights = self.aggregate(plan, weights, updates)
        report = self.publish(
            plan, weights=new_weights, sampled=sampled, contributed=len(updates), started=started
        )
        for observer in self.run.observers:
            observer.after_round(report)
        return report, new_weights


def model_name() -> str:
    """How the release store names the model being trained."""
    from client_sdk.features import FEATURE_DIM
    from client_sdk.model import HIDDEN_UNITS

    return f"MoodModel MLP {FEATURE_DIM}-{HIDDEN_UNITS}-1 (next-day mood)"


def initial_weights(seed: int | None) -> list[np.ndarray]:
    """The first global model (seeded only in simulations and tests)."""
    from client_sdk.model import create_model, get_weights

    return get_weights(create_model(seed=seed))
