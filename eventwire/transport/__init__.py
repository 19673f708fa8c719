"""Transports: the JetStream one for production, an in-memory one for tests (same semantics)."""

from .._connect_options import ConnectOptions
from ._protocol import InboundMessage, MessageSource, PublishAck, TransientPublishFailure, Transport
from .jetstream import JetStreamTransport

__all__ = [
    "ConnectOptions",
    "InboundMessage",
    "JetStreamTransport",
    "MessageSource",
    "PublishAck",
    "Transport",
    "TransientPublishFailure",
]
