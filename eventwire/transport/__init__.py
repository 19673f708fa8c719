"""Transports: the JetStream one for production, an in-memory one for tests (same semantics)."""

from .._connect_options import ConnectOptions
from ._protocol import (
    BatchMessage,
    BatchRefusal,
    BatchTarget,
    DurableState,
    FastBatchResult,
    InboundMessage,
    MessageSource,
    PinState,
    PublishAck,
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
    "MessageSource",
    "PinState",
    "PublishAck",
    "Transport",
    "TransientPublishFailure",
]
