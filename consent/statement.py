"""Consent statements and signed records: validation, canonical bytes, signatures.

The wire contract of DESIGN.md. Validation is strict because the JCS bytes of what
the device signed are what the log commits to: a field we silently coerced or
dropped would make the ledger say something the user did not sign.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

import nacl.exceptions
import nacl.signing
import rfc8785
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consent.encoding import b64url_decode

__all__ = [
    "SignedRecord",
    "Statement",
    "StatementError",
    "canonical_record",
    "canonical_statement",
    "format_time",
    "parse_json_strict",
    "parse_time",
    "verify_record_signature",
]

_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


class StatementError(ValueError):
    """A statement or record breaks the protocol; the message says how."""


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp (``...Z``) into an aware datetime."""
    if not isinstance(value, str) or not _RFC3339_UTC.fullmatch(value):
        raise ValueError("must be an RFC 3339 UTC time like 2026-11-22T10:00:00Z")
    head, _, fraction = value[:-1].partition(".")
    moment = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return moment.replace(microsecond=int((fraction or "0").ljust(6, "0")[:6]))


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Statement(BaseModel):
    """What a device signs: one decision about one purpose."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1]
    device_key: str = Field(description="Ed25519 public key, base64url without padding")
    purpose: str = Field(description="A purpose the service is configured with")
    action: Literal["grant", "withdraw"]
    policy_version: str = Field(min_length=1, max_length=32)
    notice_sha256: str = Field(description="hex SHA-256 of the notice text the user was shown")
    issued_at: str = Field(description="RFC 3339 UTC")
    expires_at: str | None = Field(default=None, description="RFC 3339 UTC; grants only")
    nonce: str = Field(description="16 to 64 random bytes, base64url without padding")

    @model_validator(mode="before")
    @classmethod
    def _no_null_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "expires_at" in data and data["expires_at"] is None:
            raise ValueError("expires_at must be omitted rather than null")
        if isinstance(data, dict) and type(data.get("v")) is not int:  # 1.0 and true are not 1
            raise ValueError("v must be the integer 1")
        return data

    @field_validator("device_key")
    @classmethod
    def _device_key(cls, value: str) -> str:
        b64url_decode(value, length=32)
        return value

    @field_validator("purpose")
    @classmethod
    def _purpose(cls, value: str) -> str:
        if not _PURPOSE.fullmatch(value):
            raise ValueError("must be lowercase letters, digits and '-'")
        return value

    @field_validator("notice_sha256")
    @classmethod
    def _notice(cls, value: str) -> str:
        if not _HEX_SHA256.fullmatch(value):
            raise ValueError("must be 64 lowercase hex digits")
        return value

    @field_validator("issued_at", "expires_at")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @field_validator("nonce")
    @classmethod
    def _nonce(cls, value: str) -> str:
        if not 16 <= len(b64url_decode(value)) <= 64:
            raise ValueError("must decode to 16 to 64 random bytes")
        return value

    @model_validator(mode="after")
    def _expiry(self) -> Statement:
        if self.expires_at is not None:
            if self.action != "grant":
                raise ValueError("expires_at is only allowed on a grant")
            if parse_time(self.expires_at) <= parse_time(self.issued_at):
                raise ValueError("expires_at must be after issued_at")
        return self

    @property
    def issued(self) -> datetime:
        return parse_time(self.issued_at)

    @property
    def expires(self) -> datetime | None:
        return None if self.expires_at is None else parse_time(self.expires_at)


class SignedRecord(BaseModel):
    """``{"statement", "signature"}``: the log's leaf is this record's JCS bytes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    statement: Statement
    signature: str = Field(description="base64url Ed25519 signature over JCS(statement)")

    @field_validator("signature")
    @classmethod
    def _signature(cls, value: str) -> str:
        b64url_decode(value, length=64)
        return value


def _statement_dict(statement: Statement) -> dict[str, Any]:
    return statement.model_dump(exclude_none=True)


def canonical_statement(statement: Statement) -> bytes:
    """The RFC 8785 bytes a device signs."""
    return rfc8785.dumps(_statement_dict(statement))


def canonical_record(record: SignedRecord) -> bytes:
    """The RFC 8785 bytes of the signed record: the log's leaf."""
    return rfc8785.dumps(
        {"statement": _statement_dict(record.statement), "signature": record.signature}
    )


def verify_record_signature(record: SignedRecord) -> None:
    """Raise :class:`StatementError` unless the device key signed the statement."""
    key = nacl.signing.VerifyKey(b64url_decode(record.statement.device_key, length=32))
    try:
        key.verify(canonical_statement(record.statement), b64url_decode(record.signature))
    except (nacl.exceptions.BadSignatureError, ValueError):
        raise StatementError(
            "the signature does not verify: sign the RFC 8785 (JCS) bytes of the statement "
            "with the device key"
        ) from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise StatementError(f"duplicate JSON keys: {', '.join(duplicated)}")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise StatementError(f"{name} is not JSON")


def parse_json_strict(body: bytes) -> Any:
    """Parse JSON, rejecting duplicate keys and NaN/Infinity (both break JCS)."""
    try:
        return json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError:
        raise StatementError("the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise StatementError(f"the body is not valid JSON: {exc}") from None
