"""``Publication``: a service's declaration that it publishes an event type on a subject."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from ._errors import ConfigError
from ._streams import check_subject


@dataclass(frozen=True, slots=True)
class Publication:
    """``event_type`` is published on ``subject`` by the App that declares it.

    A contract, not a gate: it feeds ``eventwire asyncapi`` and ``eventwire
    topology``, and publishing an undeclared event still works. ``subject`` may
    hold wildcards (``orders.created.*``) when the last tokens are a key.
    """

    event_type: type[Message]
    subject: str

    def __post_init__(self) -> None:
        if not (isinstance(self.event_type, type) and issubclass(self.event_type, Message)):
            raise ConfigError(f"Publication.event_type must be a Protobuf message class, got {self.event_type!r}")
        check_subject(self.subject)
