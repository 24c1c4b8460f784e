"""Consumers (meshgate.dev/v1alpha1): who an authenticated request belongs to.

Placeholder interface, being built: ``ConsumerIndex`` is made once per compile from
the Consumer resources and answers, for a namespace, which Consumer owns an API-key
client id or a JWT identity.
"""

from __future__ import annotations

from typing import Any


class ConsumerIndex:
    def __init__(self, inputs: Any) -> None:
        self.inputs = inputs

    def by_client_id(self, namespace: str, client_id: str) -> str | None:
        """The Consumer (its name) whose API key credential is ``client_id``."""
        return None

    def by_claims(self, namespace: str, claims: dict) -> str | None:
        """The Consumer whose JWT identity (issuer + subject, or a claim) matches."""
        return None
