"""Exceptions raised by the privacy package."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BudgetExceededError", "PrivacyError"]

_NAMES_SHOWN = 10


class PrivacyError(Exception):
    """Base class for every error of the privacy package.

    Raised directly for misuse that would make the accounting wrong, such as charging
    the same release to a user twice or reading a corrupt device ledger.
    """


class BudgetExceededError(PrivacyError):
    """An event would take users past their privacy budget; nothing was recorded.

    This is the hard stop of the design: the caller must not run the round or
    publish the release. ``user_ids`` holds every refused user; the message names the
    first few so a log line stays readable.

    >>> err = BudgetExceededError(["dev-a", "dev-b"], epsilon_budget=8.0)
    >>> err.user_ids
    ('dev-a', 'dev-b')
    >>> print(err)
    2 user(s) would pass the privacy budget epsilon=8: dev-a, dev-b
    """

    def __init__(self, user_ids: Iterable[str], *, epsilon_budget: float) -> None:
        self.user_ids: tuple[str, ...] = tuple(user_ids)
        self.epsilon_budget = epsilon_budget
        shown = ", ".join(self.user_ids[:_NAMES_SHOWN])
        more = len(self.user_ids) - _NAMES_SHOWN
        if more > 0:
            shown += f" and {more} more"
        super().__init__(
            f"{len(self.user_ids)} user(s) would pass the privacy budget "
            f"epsilon={epsilon_budget:g}: {shown}"
        )
