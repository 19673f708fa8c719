"""Testing eventwire services: an in-memory broker with JetStream semantics, a virtual clock, probes.

``eventwire.testing`` is also a pytest plugin (registered as ``eventwire``):
fixtures ``memory_broker``, ``memory_transport``, ``memory_publisher``,
``jetstream_server``, ``jetstream_url`` and ``jetstream_cluster``, and the
``virtual_time`` marker that runs an async test on :class:`VirtualTimeLoop`.
:class:`EmbeddedCluster` runs a JetStream cluster of embedded servers for fault tests.
"""

from .._delivery import Settlement
from ..transport import DurableState
from ..transport.memory import MemoryBroker, MemoryTransport
from ._clock import VirtualClock, VirtualTimeLoop, virtual_time_loop
from ._cluster import EmbeddedCluster
from ._probe import AppProbe, PublishedEvent, RecordingTransport, running

__all__ = [
    "AppProbe",
    "DurableState",
    "EmbeddedCluster",
    "MemoryBroker",
    "MemoryTransport",
    "PublishedEvent",
    "RecordingTransport",
    "Settlement",
    "VirtualClock",
    "VirtualTimeLoop",
    "running",
    "virtual_time_loop",
]
