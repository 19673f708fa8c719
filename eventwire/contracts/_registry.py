"""The event registry: Protobuf classes ↔ CloudEvents types."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from google.protobuf.message import Message

from .._errors import ContractError
from ._naming import check_event_name, check_package

E = TypeVar("E", bound=type[Message])


def event_type_of(event_class: type[Message]) -> str:
    """The CloudEvents ``type`` of an event class: its full Protobuf name."""
    return event_class.DESCRIPTOR.full_name


class EventRegistry:
    """Maps CloudEvents types to Protobuf classes after checking the contract rules.

    Registering the same class twice is harmless; two classes claiming one
    type is a ContractError.
    """

    def __init__(self, event_classes: Iterable[type[Message]] = ()) -> None:
        self._by_type: dict[str, type[Message]] = {}
        for event_class in event_classes:
            self.register(event_class)

    def register(self, event_class: E) -> E:
        """Register an event class; usable as a class decorator."""
        if not (isinstance(event_class, type) and issubclass(event_class, Message)):
            raise ContractError(f"{event_class!r} is not a Protobuf message class")
        descriptor = event_class.DESCRIPTOR
        full_name = descriptor.full_name
        check_package(descriptor.file.package, full_name)
        check_event_name(descriptor.name, full_name)
        known = self._by_type.get(full_name)
        if known is not None and known is not event_class:
            raise ContractError(f"{full_name} is already registered by {known.__module__}.{known.__qualname__}")
        self._by_type[full_name] = event_class
        return event_class

    def get(self, event_type: str) -> type[Message] | None:
        return self._by_type.get(event_type)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._by_type

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_type))

    def __len__(self) -> int:
        return len(self._by_type)
