"""Independent construction of signed consent records, as a third-party client would.

Deliberately not the SDK: these tests check the wire protocol of DESIGN.md with
nothing but PyNaCl and rfc8785, so they would catch the SDK and the service
agreeing on a mistake.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import nacl.signing
import rfc8785

NOTICE = "We learn from your mood diary without collecting it."


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Signer:
    def __init__(self) -> None:
        self.key = nacl.signing.SigningKey.generate()
        self.device_key = b64url(bytes(self.key.verify_key))

    def statement(
        self,
        action: str = "grant",
        purpose: str = "model-training",
        *,
        issued_at: datetime | str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        statement = {
            "v": 1,
            "device_key": self.device_key,
            "purpose": purpose,
            "action": action,
            "policy_version": "1",
            "notice_sha256": hashlib.sha256(NOTICE.encode()).hexdigest(),
            "issued_at": issued_at
            if isinstance(issued_at, str)
            else rfc3339(issued_at or datetime.now(UTC)),
            "nonce": b64url(os.urandom(16)),
        }
        statement.update(overrides)
        return statement

    def sign(self, statement: dict[str, Any]) -> dict[str, Any]:
        signature = self.key.sign(rfc8785.dumps(statement)).signature
        return {"statement": statement, "signature": b64url(signature)}

    def record(
        self, action: str = "grant", purpose: str = "model-training", **kw: Any
    ) -> dict[str, Any]:
        return self.sign(self.statement(action, purpose, **kw))
