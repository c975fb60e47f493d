"""The doors a person approves or rejects a release through: the CLI, the dashboard and the Prefect form.

Each door first proves who the person is — the CLI by the person's own
signature, the dashboard by its token login, the Prefect form by the token the
person types into it, checked against the hashes in this process's settings
(`dashboard.tokens`), never against anything the form carries — then records
one signed decision (`shipyard.registry.approvals`; a door signs with its own key, which
the store's policy lists with the people it may attest for) and sends the
notifications. The new events go back to the caller, who wakes the approval run
waiting for that release, if any (`shipyard.orchestration.waking`).
"""

from __future__ import annotations

import hashlib
import hmac

from shipyard.events import Decision
from shipyard.registry.approvals import Signer
from shipyard.registry.ledger import Event
from shipyard.registry.releases import Registry
from shipyard.registry.stores import Store
from shipyard.settings import Settings


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(settings: Settings, who: str, token: str) -> bool:
    """True if `token` is `who`'s door token (its sha256 is in `dashboard.tokens`)."""
    stored = settings.dashboard.tokens.get(who)
    return bool(token) and stored is not None and hmac.compare_digest(stored, hash_token(token))


def record_decision(
    settings: Settings, store: Store, line: str, version: int, decision: Decision, signer: Signer, note: str = ""
) -> list[Event]:
    """Record a signed approval (promoting when the policy allows it) or rejection; the new events (notified)."""
    registry = Registry.open(settings, store, line)
    if decision == Decision.APPROVE:
        return registry.approve(str(version), signer, settings.approval.channel, note)
    return registry.reject(str(version), signer, note)
