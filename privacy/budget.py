"""Per-user privacy budgets with a hard stop, persisted in SQL."""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError

from privacy import ledger
from privacy.accounting import (
    Counts,
    History,
    MechanismKey,
    Method,
    PrivacyEvent,
    SampledSkellam,
    canonical_history,
    has_skellam,
    history_epsilon,
)
from privacy.errors import BudgetExceededError, PrivacyError

__all__ = ["Accountant", "over_budget"]

log = logging.getLogger(__name__)


Pairs = Mapping[MechanismKey, int]


def _pairs(history: History) -> dict[MechanismKey, int]:
    return dict(history)


def _dominates(larger: Pairs, smaller: History) -> bool:
    return all(larger.get(key, 0) >= count for key, count in smaller)


def _total(history: History) -> int:
    return sum(count for _, count in history)


def _maximal(maps: Mapping[History, Pairs]) -> list[History]:
    """The histories no other one dominates; largest first, so one pass suffices."""
    maximal: list[History] = []
    for history in sorted(maps, key=lambda history: (-_total(history), _sort_key(history))):
        if not any(_dominates(maps[larger], history) for larger in maximal):
            maximal.append(history)
    return maximal


def _sort_key(history: History) -> tuple[tuple[bool, MechanismKey, int], ...]:
    # Gaussian keys never meet Skellam keys in a comparison (canonical order puts them first).
    return tuple((isinstance(key, SampledSkellam), key, count) for key, count in history)


def _comparable_groups(histories: Iterable[History], method: Method) -> list[list[History]]:
    """Histories whose epsilons come from one conversion, so domination orders them.

    With PLD a Skellam history is converted with RDP and a Gaussian one with PLD; the two
    bounds are not comparable (PLD can exceed RDP by its discretization), so a history of
    one group says nothing about a history of the other. With RDP there is one group.
    """
    groups: dict[bool, list[History]] = defaultdict(list)
    for history in histories:
        groups[method == "pld" and has_skellam(history)].append(history)
    return [groups[kind] for kind in sorted(groups)]


def over_budget(
    histories: Collection[History], *, epsilon_budget: float, delta: float, method: Method
) -> set[History]:
    """The canonical histories whose epsilon is above ``epsilon_budget``.

    Epsilon can only grow when events are added, so a history with no more of any
    mechanism than one known to be within budget is within budget, and one with at
    least as many as a history known to be over is over. The maximal histories (those
    no other history dominates) are evaluated first: in the usual round, where they
    fit, nothing else is computed. The histories they leave open are split into
    chains that differ only in the count of one mechanism, and each chain is
    binary-searched for its first history over budget: a few times log2(n)
    computations for n distinct histories, instead of n. Histories mixing Gaussian and
    Skellam events work the same way (every RDP curve is non-negative); with PLD, the
    Skellam histories (converted with RDP) are searched apart from the Gaussian ones.
    """
    result: set[History] = set()
    for group in _comparable_groups(histories, method):
        result |= _over_budget(group, epsilon_budget=epsilon_budget, delta=delta, method=method)
    return result


def _over_budget(
    histories: Collection[History], *, epsilon_budget: float, delta: float, method: Method
) -> set[History]:
    maps = {history: _pairs(history) for history in histories}
    within: list[dict[MechanismKey, int]] = []
    over: list[History] = []

    def exceeds(history: History) -> bool:
        if any(_dominates(known, history) for known in within):
            return False
        if any(_dominates(maps[history], known) for known in over):
            return True
        if history_epsilon(maps[history], delta=delta, method=method) > epsilon_budget:
            over.append(history)
            return True
        within.append(maps[history])
        return False

    result = {history for history in _maximal(maps) if exceeds(history)}
    open_ = [h for h in maps if h not in result and not any(_dominates(w, h) for w in within)]
    if not open_:
        return result

    # The chains run along the mechanism whose count varies most among open histories.
    values: dict[MechanismKey, set[int]] = defaultdict(set)
    for history in open_:
        for key, count in maps[history].items():
            values[key].add(count)
    axis = max(values, key=lambda key: (len(values[key]), isinstance(key, SampledSkellam), key))
    chains: dict[History, list[History]] = defaultdict(list)
    for history in open_:
        chains[tuple(item for item in history if item[0] != axis)].append(history)
    for chain in chains.values():
        chain.sort(key=lambda history: maps[history].get(axis, 0))
        low, high = 0, len(chain)  # chain[:low] within budget, chain[high:] over
        while low < high:
            middle = (low + high) // 2
            if exceeds(chain[middle]):
                high = middle
            else:
                low = middle + 1
        result.update(chain[low:])
    return result


def _with_event(history: Mapping[MechanismKey, int], privacy_event: PrivacyEvent) -> History:
    combined = dict(history)
    key = privacy_event.mechanism
    combined[key] = combined.get(key, 0) + privacy_event.count
    return canonical_history(combined)


def _unique(user_ids: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(user_ids))
    for user_id in unique:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError(f"user ids must be non-empty strings, got {user_id!r}")
    return unique


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Accountant:
    """Each user's privacy spend under user-level DP, with a hard stop at the budget.

    A user is charged for every round or release in which they were *eligible*
    (consented), whether or not Poisson sampling picked them: the amplification
    argument needs the sample to stay secret, so the charge cannot depend on it. A
    user eligible in fewer rounds has therefore spent less. Histories are kept as
    counts per distinct mechanism (central Gaussian :class:`SampledGaussian`, or
    distributed Skellam :class:`SampledSkellam` for an event made with ``skellam=``),
    composed in one budget by adding RDP curves; with ``method="pld"`` a history holding
    a Skellam event is converted with RDP. Epsilons are memoized by history, so a round
    over 10,000 users costs a handful of accountant computations.

    >>> from privacy import PrivacyEvent
    >>> accountant = Accountant("sqlite://", epsilon_budget=2.0, delta=1e-5)
    >>> training = PrivacyEvent.training_round(sampling_rate=0.01, noise_multiplier=1.0)
    >>> accountant.charge(["dev-a", "dev-b"], training, purpose="training", release_id="r1")
    >>> accountant.epsilon("dev-a") > accountant.epsilon("dev-c") == 0.0
    True
    """

    def __init__(
        self,
        engine: Engine | str,
        *,
        epsilon_budget: float,
        delta: float,
        method: Method = "rdp",
    ) -> None:
        if not math.isfinite(epsilon_budget) or epsilon_budget <= 0:
            raise ValueError(f"epsilon_budget must be positive and finite, got {epsilon_budget!r}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if method not in ("rdp", "pld"):
            raise ValueError(f"method must be 'rdp' or 'pld', got {method!r}")
        self._owns_engine = isinstance(engine, str)
        if isinstance(engine, str):
            engine = create_engine(engine)
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _configure_sqlite)
        self.engine = engine
        self.epsilon_budget = float(epsilon_budget)
        self.delta = float(delta)
        self.method: Method = method
        # One charge at a time in this process; across processes the database
        # serializes the writes and each charge re-checks what it wrote.
        self._lock = threading.Lock()
        ledger.create_tables(engine)

    def close(self) -> None:
        """Release the database connections, if this accountant opened them from a URL."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Accountant:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _epsilon(self, history: Counts) -> float:
        return history_epsilon(history, delta=self.delta, method=self.method)

    def history(self, user_id: str) -> dict[MechanismKey, int]:
        """The user's charges so far, as counts per mechanism key (Gaussian or Skellam)."""
        with self.engine.connect() as connection:
            return dict(ledger.load_histories(connection, [user_id]).get(user_id, {}))

    def epsilon(self, user_id: str) -> float:
        """The epsilon (at this accountant's delta) the user has spent; 0 if never charged."""
        return self._epsilon(self.history(user_id))

    def _refused(
        self, histories: ledger.Histories, user_ids: list[str], extra: PrivacyEvent | None
    ) -> list[str]:
        by_user = {
            user_id: (
                _with_event(histories.get(user_id, {}), extra)
                if extra is not None
                else canonical_history(histories.get(user_id, {}))
            )
            for user_id in user_ids
        }
        over = over_budget(
            set(by_user.values()),
            epsilon_budget=self.epsilon_budget,
            delta=self.delta,
            method=self.method,
        )
        return [user_id for user_id in user_ids if by_user[user_id] in over]

    def would_exceed(self, user_ids: Iterable[str], privacy_event: PrivacyEvent) -> list[str]:
        """The users (in the given order) whom ``privacy_event`` would take past the budget."""
        unique = _unique(user_ids)
        with self.engine.connect() as connection:
            histories = ledger.load_histories(connection, unique)
        return self._refused(histories, unique, privacy_event)

    def charge(
        self,
        user_ids: Iterable[str],
        privacy_event: PrivacyEvent,
        *,
        purpose: str,
        release_id: str,
    ) -> None:
        """Charge ``privacy_event`` to every user in ``user_ids``, all or nothing.

        Call it before the round runs or the release is published, with every user
        eligible for it. Raises :class:`BudgetExceededError` naming the users it would
        take past the budget, and :class:`PrivacyError` if some user was already
        charged for this (purpose, release_id); either way nothing is written. The
        rows are written and then the written state is checked within one transaction,
        so two concurrent charges cannot both slip under the budget.
        """
        if not purpose or not release_id:
            raise ValueError("purpose and release_id must be non-empty")
        unique = _unique(user_ids)
        if not unique:
            return
        with self._lock, self.engine.begin() as connection:
            duplicates = ledger.already_charged(
                connection, unique, purpose=purpose, release_id=release_id
            )
            if duplicates:
                raise PrivacyError(
                    f"{len(duplicates)} user(s) already charged for {purpose} release "
                    f"{release_id!r}, e.g. {duplicates[0]}"
                )
            try:
                ledger.record_charge(
                    connection, unique, privacy_event, purpose=purpose, release_id=release_id
                )
            except IntegrityError as error:  # a concurrent charge of the same release
                raise PrivacyError(
                    f"release {release_id!r} of {purpose} was charged concurrently"
                ) from error
            refused = self._refused(ledger.load_histories(connection, unique), unique, None)
            if refused:
                log.warning(
                    "Refused %s release %s: %d user(s) would pass epsilon %.4g",
                    purpose,
                    release_id,
                    len(refused),
                    self.epsilon_budget,
                )
                raise BudgetExceededError(refused, epsilon_budget=self.epsilon_budget)

    def max_epsilon(
        self, users: Collection[str] | None = None, *, purpose: str | None = None
    ) -> float:
        """The largest epsilon any of ``users`` has spent (every user when None); 0 if none.

        This is the epsilon a release carries when ``users`` are the users whose data
        could have shaped it. With ``purpose``, only the charges for that purpose count
        (from the audit log, as in :meth:`spent_by_purpose`): the composed cost of one
        purpose's releases. Users never charged count as 0. Epsilon only grows as
        events are added, so only the maximal histories (those no other one dominates)
        are evaluated: for users who differ only in how many rounds they were eligible,
        that is one computation however many users there are.
        """
        if isinstance(users, str):
            raise TypeError("users must be a collection of user ids, not one string")
        if purpose is not None and (not isinstance(purpose, str) or not purpose):
            raise ValueError(f"purpose must be a non-empty string, got {purpose!r}")
        chosen = None if users is None else sorted(_unique(users))
        with self.engine.connect() as connection:
            if purpose is not None:
                loaded = ledger.load_purpose_histories(connection, purpose, chosen)
            elif chosen is None:
                loaded = ledger.load_all_histories(connection)
            else:
                loaded = ledger.load_histories(connection, chosen)
        distinct = {canonical_history(history) for history in loaded.values()}
        return max(
            (
                self._epsilon(_pairs(history))
                for group in _comparable_groups(distinct, self.method)
                for history in _maximal({history: _pairs(history) for history in group})
            ),
            default=0.0,
        )

    def spent_by_purpose(self, user_id: str) -> dict[str, float]:
        """Epsilon of the user's charges for each purpose taken alone.

        These do not add up to :meth:`epsilon`: composition is sub-additive, so the
        total is at most their sum and usually well below it.
        """
        with self.engine.connect() as connection:
            by_purpose = ledger.load_histories_by_purpose(connection, user_id)
        return {purpose: self._epsilon(history) for purpose, history in sorted(by_purpose.items())}
