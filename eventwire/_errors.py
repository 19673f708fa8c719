"""The exceptions eventwire raises.

Catch what you can act on::

    EventwireError
    ├── ConfigError            a setting is invalid; raised at construction, names the field
    ├── ContractError          an event class breaks the contract rules (package version, naming)
    │   └── SchemaRefused      the schema registry refused a version: it breaks readers of the latest one
    ├── EnvelopeError          a message is not a valid CloudEvent (missing attribute, bad encoding)
    ├── DecodeError            the payload cannot be decoded into the event's Protobuf class
    ├── StreamConfigError      a declared stream cannot be provisioned (incompatible change)
    ├── ServerError            the embedded nats-server failed to start or died
    ├── ConnectError           the first connection to NATS failed: why, and which servers (no credentials)
    ├── PermissionDenied       the server refused a publish or a subscription: names the subject
    └── PublishError           the broker did not store an event
        ├── PublishTimeout     no ack before the publish deadline; safe to retry with the same msg id
        ├── PayloadTooLarge    headers and payload exceed the server's max_payload; never sent
        └── WrongLastSequence  an expected-last-sequence check failed (optimistic concurrency)
"""

from __future__ import annotations


class EventwireError(Exception):
    """Base class of every error eventwire raises on purpose."""


class ConfigError(EventwireError, ValueError):
    """A configuration value is invalid."""


class ContractError(EventwireError):
    """An event type breaks eventwire's contract rules."""


class SchemaRefused(ContractError):
    """A version of an event type breaks readers of its latest registered version; it was not registered.

    The first line of the message says which type and why; one line per breaking change follows,
    as ``eventwire schema check`` prints them (``findings``).
    """

    def __init__(self, event_type: str, level: str, against: int, findings: list[str]) -> None:
        summary = (
            f"{event_type}: {len(findings)} breaking change(s) at level {level} against registered version "
            f"{against}; not registered (a deliberate break: eventwire schema push --allow-breaking)"
        )
        super().__init__("\n".join([summary, *findings]))
        self.event_type = event_type
        self.findings = tuple(findings)


class EnvelopeError(EventwireError):
    """A message does not carry a valid CloudEvents envelope."""


class DecodeError(EventwireError):
    """The payload of an event cannot be decoded."""


class StreamConfigError(EventwireError):
    """A declared stream differs from the server's in a way that cannot be updated in place."""

    def __init__(self, stream: str, field: str, message: str) -> None:
        super().__init__(f"stream {stream!r}: {field}: {message}")
        self.stream = stream
        self.field = field


class ServerError(EventwireError):
    """The embedded nats-server could not be started or stopped."""


MALFORMED_URL = "malformed URL"


class ConnectError(EventwireError):
    """The first connection to NATS could not be made, or a server URL is malformed (nothing was tried).

    ``reason`` says why in a few words (docs/connecting.md lists them); ``servers`` are the URLs,
    credentials removed.
    """

    def __init__(self, reason: str, servers: tuple[str, ...], detail: str | None = None) -> None:
        where = ", ".join(servers) or "no server"
        if reason == MALFORMED_URL:
            message = f"malformed server URL {where}: {detail}"
        else:
            message = f"cannot connect to {where}: {reason}" + (f" ({detail})" if detail else "")
        super().__init__(message)
        self.reason = reason
        self.servers = servers


class PermissionDenied(EventwireError):
    """The server refused to let this connection publish to, or subscribe to, ``subject``.

    ``operation`` is ``"publish"`` or ``"subscribe"``. Not retried: the grant must change.
    """

    def __init__(self, operation: str, subject: str, context: str | None = None) -> None:
        verb = "publish to" if operation == "publish" else "subscribe to"
        super().__init__(f"permission denied: {verb} {subject}" + (f" ({context})" if context else ""))
        self.operation = operation
        self.subject = subject


class PublishError(EventwireError):
    """An event was not stored by JetStream."""


class PublishTimeout(PublishError):
    """No acknowledgement arrived before the publish deadline.

    The event may or may not be stored: publishing it again with the same
    msg id inside the stream's duplicate window stores it at most once.
    """


class PayloadTooLarge(PublishError):
    """The message exceeds the server's ``max_payload``; it was not sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message is {size} bytes, the server accepts at most {limit}")
        self.size = size
        self.limit = limit


class BatchHoldsDuplicate(PublishError):
    """An atomic batch holds a msg id the stream already has (JetStream error 10201); none of it was stored.

    :meth:`~eventwire.Publisher.publish_atomic` raises it on a first attempt:
    some of these events were published before (a business retry), or an id
    was reused. A resend after a lost acknowledgement is not this error: the
    earlier attempt was stored whole, and the call returns duplicate acks.
    """

    def __init__(self, message: str, stream: str = "") -> None:
        super().__init__(message)
        self.stream = stream


class WrongLastSequence(PublishError):
    """An ``expected_last_sequence`` or ``expected_last_subject_sequence`` check failed."""
