"""One release line in one store: the object every reader and writer of releases goes through.

`Registry.open(settings, store, line)` is how every command, door, flow and
page reaches releases: it opens the store the settings name and refuses it
unless the reader's pins and anchors hold. The Registry publishes, promotes, rolls back, approves,
rejects and records checkpoint fates; each mutator returns the ledger events
it wrote (empty when there was nothing to do: every write is idempotent).
Notifications hang on the ledger's append: each event this registry writes is
announced once, as it lands. Readers resolve a release by `3`, `v3` or a
channel, pull, diff, and read the line's heads, pending releases and events a
page at a time. The rules live below it: `shipyard.registry.publish` (blobs and
manifests), `shipyard.registry.approvals` (signed decisions under the store's policy),
`shipyard.registry.ledger` (the hash-chained log).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from shipyard.checkpoints import Checkpoint
from shipyard.events import EventType
from shipyard.registry import approvals, moves, publish
from shipyard.registry.approvals import Signer
from shipyard.registry.ledger import Event, Ledger, fate_key
from shipyard.registry.notify import announce
from shipyard.registry.publish import Published, Pulled
from shipyard.registry.state import Release, State
from shipyard.registry.stores import Store, release_store
from shipyard.registry.trust import check_anchors
from shipyard.settings import NotifySettings, Settings


class Registry:
    def __init__(
        self,
        store: Store,
        line: str,
        notify: NotifySettings | None = None,
        open_store_refuses: Collection[str] = approvals.OPEN_STORE_CHANNELS,
    ) -> None:
        self.store, self.line, self.notify = store, line, notify
        self.open_store_refuses = tuple(open_store_refuses)  # channels that stay put while the store is open
        self.ledger = Ledger(store, on_append=self._appended)
        self._written: list[Event] = []

    @classmethod
    def open(
        cls, settings: Settings, store: Store | str | None = None, line: str | None = None, new: bool = False
    ) -> Registry:
        """The way every command, door, flow and page reaches releases: the line (default `release.line`) in the
        store (default `release.store`; a URI or an open store), refused unless this reader's pins and anchors
        hold (`trust.check_anchors`). Unless `new` (publishing, setting a policy), the store must hold a ledger."""
        opened = release_store(settings, store) if store is None or isinstance(store, str) else store
        registry = cls.of(opened, settings, line)
        state = registry.state()
        if not new:
            publish.require_store(state, opened.uri)
        check_anchors(opened, settings, state)
        return registry

    @classmethod
    def of(cls, store: Store, settings: Settings, line: str | None = None) -> Registry:
        """The line (default `release.line`) in `store`, announcing to `settings.notify`, refusing what
        `trust.open_store_refuses` names while the store is open."""
        return cls(store, line or settings.release.line, settings.notify, settings.trust.open_store_refuses)

    # -- writes: each returns the events it appended

    def publish(
        self, model_dir: Path, progress: bool = False, ungated: str | None = None, release_key: Path | None = None
    ) -> Published:
        """The candidate as the line's next release, exactly once (`Published.event` is None if it already was);
        signed for consumers with `release_key` (Model Signing bundle, in-toto provenance)."""
        return publish.publish(model_dir, self.line, self.store, progress, ungated, self.ledger, release_key)

    def promote(self, ref: str, channel: str) -> list[Event]:
        """Point `channel` at the release; a channel the policy protects only with the approvals it asks for."""
        version = self.resolve(ref).version
        refuses = self.open_store_refuses
        return self._writing(
            lambda: approvals.promote_approved(self.store, self.line, version, channel, self.ledger, refuses)
        )

    def rollback(self, channel: str, signer: Signer | None, note: str = "") -> list[Event]:
        refuses = self.open_store_refuses
        return self._writing(
            lambda: approvals.rollback(self.store, self.line, channel, signer, note, self.ledger, refuses)
        )

    def open_store(self) -> str | None:
        """The line that says this store is open (no signed policy), or None."""
        return approvals.open_store_notice(self.state(), self.store.uri)

    def approve(self, ref: str, signer: Signer, channel: str, note: str = "") -> list[Event]:
        version = self.resolve(ref).version
        return self._writing(
            lambda: approvals.approve(self.store, self.line, version, signer, channel, note, self.ledger)
        )

    def reject(self, ref: str, signer: Signer, note: str) -> list[Event]:
        version = self.resolve(ref).version
        return self._writing(lambda: approvals.reject(self.store, self.line, version, signer, note, self.ledger))

    def record_fate(self, kind: EventType, checkpoint: Checkpoint, reason: str, **extra: Any) -> list[Event]:
        """Record why a checkpoint did not become a release (refused, skipped, gate_failed), once: a rerun that
        comes to the same fate for the same reason appends nothing (and notifies no one again)."""
        data = {
            "line": self.line,
            "checkpoint_uri": checkpoint.uri,
            "step": checkpoint.step,
            "checkpoint_digest": checkpoint.digest,
            "metrics": checkpoint.metrics,
            "reason": reason,
            **extra,
        }
        key = fate_key(kind, data)
        return self._writing(lambda: self.ledger.append(lambda state: None if key in state.fates else (kind, data)))

    # -- reads

    def state(self) -> State:
        return self.ledger.refresh()

    def snapshot(self) -> tuple[State, list[Event]]:
        """The state and every event, as copies (for a long-lived reader serving several threads)."""
        return self.ledger.snapshot()

    def resolve(self, ref: str) -> Release:
        """A release by version (`3`, `v3`) or channel name."""
        return publish.resolve(self.state(), self.line, ref)

    def heads(self) -> dict[str, int]:
        """Each channel of the line and the version it points at."""
        return {c: h[-1] for (line, c), h in sorted(self.state().channels.items()) if line == self.line and h}

    def pending(self, channel: str) -> list[Release]:
        """Releases not (yet) on `channel` and not rejected: what approvers have before them, newest first."""
        state = self.state()
        mine = [r for (line, _), r in state.releases.items() if line == self.line]
        waiting = [r for r in mine if approvals.settled(state, self.line, r.version, channel) is None]
        return sorted(waiting, key=lambda r: r.version, reverse=True)

    def waiting(self, ref: str, channel: str) -> str:
        """Why the release is not on `channel` yet under the store's policy ("" when it is, or when the channel is
        not protected): the approvals it still needs, a veto, or a policy that keeps ungated releases off."""
        state = self.state()
        return moves.waiting(state, self.line, channel, publish.resolve(state, self.line, ref).version)

    def events(self, after: int = 0, limit: int = 100) -> list[Event]:
        """A page of the ledger: up to `limit` events after sequence number `after`, oldest first."""
        last = min(self.state().events, after + limit)
        return [self.ledger.event(seq) for seq in range(after + 1, last + 1)]

    def pull(self, ref: str, out: Path, base: Path | None = None) -> Pulled:
        return publish.pull(self.store, self.line, ref, out, base)

    def diff(self, old: str, new: str) -> dict[str, Any]:
        return publish.diff(self.store, self.line, old, new)

    def manifest(self, release: Release) -> dict[str, Any]:
        return publish.manifest(self.store, release)

    # --

    def _writing(self, write: Callable[[], object]) -> list[Event]:
        self._written = []
        write()
        return list(self._written)

    def _appended(self, event: Event) -> None:
        self._written.append(event)
        if self.notify is not None:
            announce(self.notify, [event])
