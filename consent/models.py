"""The consent service's answers as typed models, shared by the service and the device SDK.

Pydantic only (no web or database imports), so a device parses a receipt with the very
class the service answers with, and ``import consent`` stays light. The service builds
these and the API declares them as ``response_model``; the SDK validates what it
receives with them. Hashes are standard base64 strings, as on the wire.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ConsistencyProof",
    "Controller",
    "DeviceState",
    "EligibilityRequest",
    "EligibilityResponse",
    "InclusionProof",
    "Problem",
    "PurposeDecision",
    "PurposeState",
    "Receipt",
]


class Controller(BaseModel):
    """The data controller named in receipts (Kantara ``piiControllers``)."""

    name: str = "moodfed demo controller"
    contact: str = "privacy@moodfed.invalid"
    address: str = "not configured: set MOODFED_POLICIES"


class PurposeDecision(BaseModel):
    purpose: str
    action: Literal["grant", "withdraw"]
    consent_type: str
    expires_at: str | None


class Receipt(BaseModel):
    """What ``POST /v1/consents`` answers: the proof, then the consent-receipt fields."""

    index: int
    tree_size: int
    leaf_hash: str = Field(description="standard base64 of SHA-256(0x00 || leaf)")
    inclusion_proof: list[str] = Field(description="RFC 9162 audit path, standard base64")
    checkpoint: str = Field(description="C2SP signed note of the checkpoint at tree_size")
    log_origin: str
    receipt_version: str
    consent_timestamp: str
    pii_principal_id: str
    controller: Controller
    jurisdiction: str
    language: str
    policy_version: str
    policy_url: str
    notice_sha256: str
    purposes: list[PurposeDecision]
    data_categories: list[str]
    recipients: list[str]
    retention: str
    withdrawal_method: str


class PurposeState(BaseModel):
    action: Literal["grant", "withdraw"]
    issued_at: str
    expires_at: str | None
    policy_version: str
    index: int
    active: bool = Field(description="a grant that has not expired")


class DeviceState(BaseModel):
    device_key: str
    purposes: dict[str, PurposeState]


class EligibilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    purpose: str
    device_keys: list[str]


class EligibilityResponse(BaseModel):
    eligible: list[str]


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]


class ConsistencyProof(BaseModel):
    old: int
    new: int
    proof: list[str]


class Problem(BaseModel):
    detail: str
