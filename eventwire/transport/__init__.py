"""Transports: the JetStream one for production, an in-memory one for tests (same semantics)."""

from .._connect_options import ConnectOptions
from ._protocol import (
    BatchMessage,
    BatchRefusal,
    BatchTarget,
    DurableState,
    FastBatchResult,
    InboundMessage,
    KeyValueStore,
    MessageSource,
    PinState,
    PublishAck,
    StoredValue,
    TransientPublishFailure,
    Transport,
)
from .jetstream import JetStreamTransport

__all__ = [
    "BatchMessage",
    "BatchRefusal",
    "BatchTarget",
    "ConnectOptions",
    "DurableState",
    "FastBatchResult",
    "InboundMessage",
    "JetStreamTransport",
    "KeyValueStore",
    "MessageSource",
    "PinState",
    "PublishAck",
    "StoredValue",
    "Transport",
    "TransientPublishFailure",
]
