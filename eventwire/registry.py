"""The schema registry: every version of every event type's contract, on a JetStream key-value bucket.

A service registers the types it publishes when it starts (``App(register_schemas=True)``, the
default), a CI job with ``eventwire schema push``. A new version is checked against the type's latest
with the rules of ``eventwire schema check`` and refused when it breaks its readers. Any tool then
decodes any event from its ``ce-dataschema`` alone, without the publisher's generated code.

The bucket, ``eventwire_schemas``, holds (docs/registry.md has the details, for other languages):

- ``schemas.<type>.<digest>``: the version's serialized ``FileDescriptorSet`` (its file and imports),
  where ``urn:eventwire:schema:<type>:<digest>`` is the ``ce-dataschema`` of its events;
- ``types.<type>``: the type's versions, oldest first, as JSON.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from ._envelope import now_rfc3339
from ._errors import ContractError, SchemaRefused
from .contracts._breaking import LEVELS, Level
from .contracts._descriptor_sets import (
    breaking_changes,
    descriptor_set_of,
    message_class,
    parse_schema_id,
    schema_id,
)
from .transport import KeyValueStore, Transport

BUCKET = "eventwire_schemas"
_CONTENTION_ATTEMPTS = 50
_UNKNOWN_FOR = 10.0  # seconds an id found missing is not asked for again


@dataclass(frozen=True)
class SchemaVersion:
    """One registered version of an event type."""

    event_type: str
    version: int
    schema_id: str
    registered_at: str
    registered_by: str
    level: str
    # Non-empty only for a break registered on purpose (``--allow-breaking``): what it broke.
    breaking_changes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "id": self.schema_id,
            "registered_at": self.registered_at,
            "registered_by": self.registered_by,
            "level": self.level,
            "breaking_changes": list(self.breaking_changes),
        }

    @classmethod
    def from_json(cls, event_type: str, data: dict[str, Any]) -> SchemaVersion:
        return cls(
            event_type,
            int(data["version"]),
            str(data["id"]),
            str(data["registered_at"]),
            str(data["registered_by"]),
            str(data.get("level", "")),
            tuple(data.get("breaking_changes", ())),
        )


def _history_key(event_type: str) -> str:
    return f"types.{event_type}"


def _schema_key(identifier: str) -> str | None:
    parsed = parse_schema_id(identifier)
    return None if parsed is None else f"schemas.{parsed[0]}.{parsed[1]}"


class SchemaRegistry:
    """The registry on one key-value bucket; open it with :meth:`open`."""

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        self._classes: dict[str, type[Message]] = {}
        self._unknown: dict[str, float] = {}

    @classmethod
    async def open(cls, transport: Transport, *, replicas: int = 1, create: bool = True) -> SchemaRegistry | None:
        """The registry of the server ``transport`` is connected to; made with ``replicas`` if missing and
        ``create``, else None when there is none."""
        store = await transport.key_value(BUCKET, replicas=replicas, create=create)
        return None if store is None else cls(store)

    async def types(self) -> list[str]:
        """Every registered event type, sorted."""
        return [key.removeprefix("types.") for key in await self._store.keys() if key.startswith("types.")]

    async def versions(self, event_type: str) -> list[SchemaVersion]:
        """The versions of ``event_type``, oldest first; empty when none is registered."""
        return (await self._history(event_type))[0]

    async def _history(self, event_type: str) -> tuple[list[SchemaVersion], int | None]:
        stored = await self._store.get(_history_key(event_type))
        if stored is None:
            return [], None
        try:
            document = json.loads(stored.value)
            versions = [SchemaVersion.from_json(event_type, v) for v in document["versions"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"the registry's history of {event_type} is not readable: {exc}") from None
        return versions, stored.revision

    async def descriptor_set(self, identifier: str) -> descriptor_pb2.FileDescriptorSet | None:
        """The contract stored under a ``ce-dataschema`` id; None when the registry has no such version."""
        key = _schema_key(identifier)
        stored = None if key is None else await self._store.get(key)
        if stored is None:
            return None
        try:
            return descriptor_pb2.FileDescriptorSet.FromString(stored.value)
        except Exception as exc:
            raise ContractError(f"the registry's {identifier} is not a FileDescriptorSet: {exc}") from None

    async def message_class(self, identifier: str) -> type[Message] | None:
        """A class decoding events of the version ``identifier`` names, built from the registry alone."""
        found = self._classes.get(identifier)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        if loop.time() < self._unknown.get(identifier, 0.0):
            return None
        files = await self.descriptor_set(identifier)
        parsed = parse_schema_id(identifier)
        if files is None or parsed is None:
            self._unknown[identifier] = loop.time() + _UNKNOWN_FOR
            return None
        found = self._classes[identifier] = message_class(files, parsed[0])
        return found

    async def refusal(self, event_class: type[Message], *, level: Level = "WIRE_JSON") -> SchemaRefused | None:
        """Why :meth:`register` would refuse ``event_class`` now, or None; nothing is written."""
        versions = await self.versions(event_class.DESCRIPTOR.full_name)
        if any(v.schema_id == schema_id(event_class) for v in versions):
            return None
        return await self._refusal(versions, descriptor_set_of(event_class), event_class.DESCRIPTOR.full_name, level)

    async def _refusal(
        self, versions: list[SchemaVersion], files: descriptor_pb2.FileDescriptorSet, event_type: str, level: Level
    ) -> SchemaRefused | None:
        if not versions:
            return None
        latest = versions[-1]
        before = await self.descriptor_set(latest.schema_id)
        if before is None:
            raise ContractError(f"the registry lists {latest.schema_id} but does not hold it")
        findings = [str(c) for c in breaking_changes(before, files, event_type, level)]
        return SchemaRefused(event_type, level, latest.version, findings) if findings else None

    async def register(
        self,
        event_class: type[Message],
        *,
        service: str,
        level: Level = "WIRE_JSON",
        allow_breaking: bool = False,
    ) -> tuple[SchemaVersion, bool]:
        """Register the version of ``event_class`` by ``service``.

        Returns the version and whether this call added it (False: it was registered already). Raises
        :class:`~eventwire.SchemaRefused` when it breaks readers of the latest version at ``level``,
        unless ``allow_breaking``, which registers it with the changes recorded. Instances registering
        the same version at once store it once: each write names the revision it replaces.
        """
        if level not in LEVELS:
            raise ContractError(f"level {level!r}: use one of {', '.join(LEVELS)}")
        files = descriptor_set_of(event_class)
        identifier = schema_id(event_class)
        event_type = event_class.DESCRIPTOR.full_name
        schema_key = _schema_key(identifier)
        assert schema_key is not None
        for _ in range(_CONTENTION_ATTEMPTS):
            versions, revision = await self._history(event_type)
            known = next((v for v in versions if v.schema_id == identifier), None)
            if known is not None:
                return known, False
            refusal = await self._refusal(versions, files, event_type, level)
            if refusal is not None and not allow_breaking:
                raise refusal
            findings = list(refusal.findings) if refusal is not None else []
            # A second writer of this id stores the same contract: its refusal here is harmless.
            await self._store.create(schema_key, files.SerializeToString(deterministic=True))
            added = SchemaVersion(
                event_type,
                len(versions) + 1,
                identifier,
                now_rfc3339(),
                service,
                level,
                tuple(findings),
            )
            document = json.dumps(
                {"type": event_type, "versions": [v.to_json() for v in (*versions, added)]}, indent=1
            ).encode()
            key = _history_key(event_type)
            if revision is None:
                written = await self._store.create(key, document)
            else:
                written = await self._store.update(key, document, revision)
            if written is not None:
                return added, True
        raise ContractError(f"{event_type}: the registry's history kept changing; try again")
