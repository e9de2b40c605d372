"""Consent-gated DP-FedAvg, one round as stages: gate, charge, sample, send, aggregate, publish.

Each stage has one job (as a Flower Strategy's ``configure_train`` and
``aggregate_train`` do):

1. **gate**: ask the consent service which attested devices may train now; any failure
   stops the run (no round on unchecked devices), and no eligible device ends it;
2. **charge**: q = expected / eligible; stop before the round if it would take any
   eligible user past the budget (the hard stop), else charge every eligible user
   (the amplification argument covers them all, and the charge must not depend on who
   takes part). A secure round is planned here too (its cohort, neighbour graph and
   survivor floor t, :func:`server.secagg.plan_round`), since its noise and so its cost
   depend on t;
3. **sample** (central only): Poisson sampling on the server (:mod:`server.sampling`).
   In a secure round there is no server-side sample: every eligible device takes part
   in the secure sum and draws its own coin with probability q, so the server never
   learns who contributed an update (the amplification holds against it too);
4. **send**: the global model and the ``train-config`` to the devices. Secure (the
   default): SecAgg+ over every eligible device (:func:`server.secagg.secure_sum`), each
   device adding its share of Skellam noise to its integer-encoded, clipped update (or
   to zeros), so the server learns only the noised sum of at least t devices. Central
   (a trusted server): clipped updates in the clear from the sampled devices;
5. **aggregate**: secure: decode the noised sum (:class:`privacy.DistributedSkellam`),
   the server adds no noise; central: DP-FedAvg (:mod:`server.aggregation`), clipped sum
   plus Gaussian noise. Either way divided by the expected count q * |eligible|;
6. **publish**: evaluate on the server's own held-out data and record the round with its
   (epsilon, delta) and its aggregation mode. Epsilon is the largest total spend of any
   user eligible in some round of this run. A secure round with fewer than t survivors
   aborts: nothing is released, and the charge stays (the devices took part).
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
from client_sdk.secagg import RoundAborted, RoundParams
from privacy import Accountant, BudgetExceededError, PrivacyEvent, history_epsilon
from privacy.distributed import DistributedSkellam
from server.aggregation import apply_average, next_global, parse_update
from server.attestation import Attestations
from server.eligibility import EligibilitySource
from server.errors import RunStopped
from server.evaluation import HoldoutSet
from server.messaging import exchange
from server.observers import RunObserver
from server.releases import ReleaseStore
from server.sampling import poisson_sample, round_rng
from server.secagg import SecureSum, plan_round, secure_sum
from server.settings import TrainSettings

__all__ = [
    "MODULUS_BITS",
    "RoundPlan",
    "RoundReport",
    "SecurePlan",
    "TrainingRound",
    "TrainingRun",
    "initial_weights",
    "model_name",
]

log = logging.getLogger(__name__)

MODULUS_BITS = 32
"""Secure sums are taken modulo 2^32 (privacy.DistributedSkellam picks the scale that
keeps the noised sum from wrapping, with probability at least 1 - 1e-9)."""

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
    """Central: the server's sample. Secure: every eligible device asked (each drew its
    own secret coin)."""
    contributed: int
    """Central: updates received. Secure: survivors whose input is in the sum."""
    epsilon: float
    delta: float
    holdout_mae: float | None
    release_id: int | None
    """None when the round aborted and released nothing."""
    seconds: float
    aggregation: str = "secure"
    aborted: str | None = None
    """Why a secure round released nothing (fewer survivors than its floor)."""


@dataclass(frozen=True, slots=True)
class SecurePlan:
    """A secure round's protocol parameters and the noise encoding they imply."""

    params: RoundParams
    mechanism: DistributedSkellam


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """What the gate and the charge decided, before anything is sent."""

    number: int
    eligible: tuple[str, ...]
    sampling_rate: float
    expected_count: float
    event: PrivacyEvent
    """What the round costs each eligible user."""
    secure: SecurePlan | None = None


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

    @property
    def flower_run_id(self) -> int:
        """Flower's run id (what attestations and secure sums are bound to); 1 without a grid."""
        return self.grid.run.run_id if self.grid is not None else 1

    def record_start(self, *, model: str, metric_label: str) -> None:
        """Record in the release store that this run started, and under which settings."""
        settings = self.settings
        self.store.start_run(
            run_id=self.run_id,
            flower_run_id=str(self.flower_run_id),
            purpose=TRAINING_PURPOSE,
            planned_rounds=settings.rounds,
            epsilon_budget=settings.epsilon_budget,
            delta=settings.delta,
            accounting=settings.accounting,
            noise_multiplier=settings.noise_multiplier,
            clipping_norm=settings.clipping_norm,
            expected_devices=settings.expected_devices,
            model=model,
            metric_label=metric_label,
            settings=settings.describe(),
        )


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

    def charge(self, eligible: tuple[str, ...], weights: Sequence[np.ndarray]) -> RoundPlan:
        """Plan a secure round, then the hard stop, then the charge of every eligible user
        (charge, then spend: a crash in between over-counts, never under-counts)."""
        settings = self.run.settings
        q = settings.sampling_rate(eligible=len(eligible))
        secure = self._plan_secure(eligible, weights) if settings.aggregation == "secure" else None
        event = PrivacyEvent.training_round(
            sampling_rate=q,
            noise_multiplier=settings.noise_multiplier,
            skellam=secure.mechanism if secure is not None else None,
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
        return RoundPlan(self.number, eligible, q, q * len(eligible), event, secure)

    def _plan_secure(self, eligible: tuple[str, ...], weights: Sequence[np.ndarray]) -> SecurePlan:
        if len(eligible) < 3:
            raise RunStopped(
                "stopped",
                f"{len(eligible)} eligible device(s) before round {self.number}: secure "
                "aggregation needs at least 3",
            )
        node_for = self.run.attestations.node_for()
        dimension = sum(int(np.prod(w.shape)) for w in weights)
        params = plan_round(
            [node_for[key] for key in eligible],
            run_id=self.run.flower_run_id,
            round_label=f"train/{self.run.run_id[:8]}/{self.number}",
            modulus_bits=MODULUS_BITS,
            vector_length=dimension,
        )
        settings = self.run.settings
        mechanism = DistributedSkellam(
            clip_norm=settings.clipping_norm,
            dimension=dimension,
            max_devices=params.n,
            min_survivors=params.min_survivors,
            noise_multiplier=settings.noise_multiplier,
            bits=MODULUS_BITS,
        )
        return SecurePlan(params=params, mechanism=mechanism)

    def sample(self, plan: RoundPlan) -> tuple[str, ...]:
        """Central: each eligible device independently with probability q (CSPRNG unless
        seeded). Secure: every eligible device (each draws its own coin in secret)."""
        if plan.secure is not None:
            return plan.eligible
        rng = round_rng(self.run.settings.seed, self.number, stream=_SAMPLING_STREAM)
        return tuple(poisson_sample(plan.eligible, rate=plan.sampling_rate, rng=rng))

    def _content(self, plan: RoundPlan, weights: list[np.ndarray]) -> RecordDict:
        rate = plan.sampling_rate if plan.secure is not None else 1.0
        config = self.run.settings.train_config(self.number, participation_rate=rate)
        return RecordDict(
            {GLOBAL_MODEL_RECORD: ArrayRecord(weights), TRAIN_CONFIG_RECORD: config.to_record()}
        )

    def secure_send(self, plan: RoundPlan, weights: list[np.ndarray]) -> SecureSum:
        """The secure sum of every eligible device's masked, noised input."""
        if self.run.grid is None or plan.secure is None:
            raise ValueError("a secure round needs a grid and a secure plan")
        records = self.run.attestations.records
        return secure_sum(
            self.run.grid,
            params=plan.secure.params,
            attestations={node: records[node] for node in plan.secure.params.ring},
            input_message_type=TRAIN_MESSAGE_TYPE,
            input_content=self._content(plan, weights),
            timeout=self.run.settings.round_timeout,
            observers=self.run.observers,
        )

    def secure_aggregate(
        self, plan: RoundPlan, weights: list[np.ndarray], total: SecureSum
    ) -> list[np.ndarray]:
        """The noised sum decoded (the devices added the noise), over the expected count."""
        assert plan.secure is not None
        noisy_sum = plan.secure.mechanism.decode(total.total)
        return apply_average(weights, noisy_sum / plan.expected_count)

    def send(
        self, plan: RoundPlan, sampled: Sequence[str], weights: list[np.ndarray]
    ) -> list[list[np.ndarray]]:
        """Central: the model and this round's config to the sampled devices; their
        well-formed clipped updates, in the clear."""
        node_for = self.run.attestations.node_for()
        nodes = {node_for[key] for key in sampled}
        content = self._content(plan, weights)
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
        """Central DP-FedAvg: the failed and the silent contribute zero; the server adds the
        noise; the denominator is fixed."""
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
        own = history_epsilon(
            {plan.event.mechanism: plan.event.count},
            delta=settings.delta,
            method=run.accountant.method,
        )
        aggregation = "secure" if plan.secure is not None else "central"
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
            release_epsilon=own,
            aggregation=aggregation,
            private=settings.seed is None,
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
            aggregation=aggregation,
        )

    def aborted(self, plan: RoundPlan, reason: str, *, started: float) -> RoundReport:
        """A secure round that released nothing; its charge stays."""
        run = self.run
        run.contributors.update(plan.eligible)
        log.warning("Round %s aborted, nothing released (still charged): %s", self.number, reason)
        return RoundReport(
            round=self.number,
            eligible=plan.eligible,
            sampling_rate=plan.sampling_rate,
            expected_count=plan.expected_count,
            sampled=plan.eligible,
            contributed=0,
            epsilon=run.accountant.max_epsilon(run.contributors),
            delta=run.settings.delta,
            holdout_mae=None,
            release_id=None,
            seconds=time.monotonic() - started,
            aggregation="secure",
            aborted=reason,
        )

    def __call__(self, weights: list[np.ndarray]) -> tuple[RoundReport, list[np.ndarray]]:
        """Run the stages in order; the next global model and what was published."""
        started = time.monotonic()
        for observer in self.run.observers:
            observer.before_round(self.number)
        plan = self.charge(self.gate(), weights)
        sampled = self.sample(plan)
        if plan.secure is not None:
            try:
                total = self.secure_send(plan, weights)
            except RoundAborted as abort:
                report = self.aborted(plan, str(abort), started=started)
                for observer in self.run.observers:
                    observer.after_round(report)
                return report, weights
            new_weights = self.secure_aggregate(plan, weights, total)
            contributed = total.survivors
        else:
            updates = self.send(plan, sampled, weights)
            new_weights = self.aggregate(plan, weights, updates)
            contributed = len(updates)
        report = self.publish(
            plan, weights=new_weights, sampled=sampled, contributed=contributed, started=started
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
