"""Transports: the JetStream one for production, an in-memory one for tests (same semantics)."""

from ._protocol import InboundMessage, MessageSource, PublishAck, TransientPublishFailure, Transport
from .jetstream import ConnectOptions, JetStreamTransport

__all__ = [
    "ConnectOptions",
    "InboundMessage",
    "JetStreamTransport",
    "MessageSource",
    "PublishAck",
    "Transport",
    "TransientPublishFailure",
]
