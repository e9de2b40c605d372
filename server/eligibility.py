"""The server's question to the consent service: which of these devices may take part?

Any failure (unreachable service, refused token, a malformed or inconsistent answer)
raises :class:`EligibilityError`: a round must never run on devices whose consent was
not checked, so there is no fallback and no cached answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import httpx
from pydantic import SecretStr, ValidationError

from consent.models import EligibilityResponse

__all__ = ["EligibilityClient", "EligibilityError", "EligibilitySource"]

log = logging.getLogger(__name__)

_CHUNK = 10_000  # device keys per request, well under the service's default limit


class EligibilityError(RuntimeError):
    """The consent service could not say which devices are eligible: do not train."""


class EligibilitySource(Protocol):
    """Who may take part in a purpose now: the consent service (:class:`EligibilityClient`),
    or a stand-in a simulation or a test provides."""

    def eligible(self, purpose: str, device_keys: Sequence[str]) -> list[str]:
        """The keys (in input order) whose latest ledger record for ``purpose`` is an
        active grant."""
        ...


class EligibilityClient:
    """``POST /v1/eligibility`` with the server's bearer token.

    The token is held as a ``SecretStr`` and never logged or put in an error message.
    """

    def __init__(
        self,
        url: str,
        *,
        token: SecretStr | str,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EligibilityClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def eligible(self, purpose: str, device_keys: Sequence[str]) -> list[str]:
        """The keys (in input order, without duplicates) whose latest record is a grant."""
        wanted = list(dict.fromkeys(device_keys))
        granted: set[str] = set()
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            answer = self._ask(purpose, chunk)
            unknown = set(answer) - set(chunk)
            if unknown:
                raise EligibilityError(
                    f"the consent service at {self.url} answered with {len(unknown)} device "
                    "key(s) it was not asked about; refusing to trust its answer"
                )
            granted.update(answer)
        return [key for key in wanted if key in granted]

    def _ask(self, purpose: str, device_keys: list[str]) -> list[str]:
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        try:
            response = self._http.post(
                "/v1/eligibility",
                json={"purpose": purpose, "device_keys": device_keys},
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise EligibilityError(
                f"cannot reach the consent service at {self.url} ({type(exc).__name__}); "
                "check it is running and MOODFED_CONSENT_URL points at it"
            ) from None
        if response.status_code in (401, 403):
            raise EligibilityError(
                f"the consent service at {self.url} refused the eligibility token "
                f"({response.status_code}); set MOODFED_ELIGIBILITY_TOKEN to the service's token"
            )
        if response.status_code != 200:
            raise EligibilityError(
                f"the consent service at {self.url} answered {response.status_code} to the "
                f"eligibility query: {_detail(response)}"
            )
        try:
            eligible = EligibilityResponse.model_validate_json(
                response.content, strict=True
            ).eligible
        except ValidationError:
            raise EligibilityError(
                f"the consent service at {self.url} sent a malformed eligibility answer"
            ) from None
        log.debug("Eligibility for %s: %d of %d devices", purpose, len(eligible), len(device_keys))
        return eligible


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json()["detail"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
