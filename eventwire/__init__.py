"""eventwire: event-driven microservices on NATS JetStream.

Layers, lowest first: ``contracts`` (Protobuf event registry and codecs),
the CloudEvents envelope, ``transport`` (JetStream; in-memory for tests), the
publisher and consumer, and ``App`` on top. This module re-exports what a
service author needs; operators' tools live in ``eventwire.server`` and the CLI.
"""

from ._app import App
from ._backoff import Backoff
from ._delivery import Delivery, Middleware, Next, Settlement
from ._envelope import Envelope
from ._errors import (
    BatchHoldsDuplicate,
    ConfigError,
    ConnectError,
    ContractError,
    DecodeError,
    EnvelopeError,
    EventwireError,
    PayloadTooLarge,
    PermissionDenied,
    PublishError,
    PublishTimeout,
    SchemaRefused,
    ServerError,
    StreamConfigError,
    WrongLastSequence,
)
from ._outcome import Outcome
from ._publication import Publication
from ._publisher import Outgoing, Publisher
from ._retry import Reject, Retry, RetryPolicy
from ._script import connect
from ._streams import Stream
from .contracts import EventRegistry
from .transport import ConnectOptions, PublishAck

__all__ = [
    "App",
    "Backoff",
    "BatchHoldsDuplicate",
    "ConfigError",
    "ConnectError",
    "ConnectOptions",
    "ContractError",
    "DecodeError",
    "Delivery",
    "Envelope",
    "EnvelopeError",
    "EventRegistry",
    "EventwireError",
    "Middleware",
    "Next",
    "Outcome",
    "Outgoing",
    "PayloadTooLarge",
    "PermissionDenied",
    "Publication",
    "PublishAck",
    "PublishError",
    "PublishTimeout",
    "Publisher",
    "Reject",
    "Retry",
    "RetryPolicy",
    "SchemaRefused",
    "ServerError",
    "Settlement",
    "Stream",
    "StreamConfigError",
    "WrongLastSequence",
    "connect",
]
