"""The consent service's HTTP API: one router per resource, thin over the ledger.

``consents`` (append, device state), ``eligibility`` (the server's query) and ``log``
(checkpoint, key, proofs, entries) routers; ``deps`` (settings, ledger, batcher, the
bearer token); ``errors``, the one mapping of domain errors to HTTP statuses.
"""

from consent.api.app import create_app

__all__ = ["create_app"]
