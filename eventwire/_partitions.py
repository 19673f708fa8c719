"""Spreading a partitioned handler's partitions over its instances.

nats-server pins each partition durable to the instance whose pull request heads its queue when a
message is due, and leaves the pin there while that instance keeps pulling: it never rebalances. The
first instance to start would keep every partition, and one started later would get none until a pin
moves. So each instance checks, twice per pinned TTL, how many instances pull (the requests waiting on
a partition: each instance keeps one out on each) and hands the partitions above its share on; it then
sends no request on those for a moment, so that another instance's takes the pin.
With one event unacked per partition (the default) any partition can go: the server delivers the
next one, to the new holder, only after the old holder's ack. With more, only an idle one goes, so
that no event of a partition overtakes one still being handled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import statistics
from collections.abc import Sequence

from ._consumer import Consumer
from .transport import Transport

logger = logging.getLogger("eventwire.consumer")


class PartitionBalancer:
    """Keeps one instance's share of a partitioned handler's pins: ceil(partitions / instances)."""

    def __init__(self, handler: str, consumers: Sequence[Consumer], transport: Transport, *, interval: float) -> None:
        self._handler = handler
        self._consumers = list(consumers)
        self._transport = transport
        self._interval = max(1.0, interval)
        self._failing = False

    async def run(self) -> None:
        while True:
            # Jittered, so that instances do not all hand partitions on at the same moment.
            await asyncio.sleep(self._interval * random.uniform(0.75, 1.25))
            try:
                await self.balance()
            except Exception as exc:  # a failover under way, a missing permission: said once, tried again
                if not self._failing:
                    logger.warning("handler %s: cannot balance its partitions (%r); trying again", self._handler, exc)
                self._failing = True
            else:
                self._failing = False

    async def balance(self) -> None:
        held = [c for c in self._consumers if c.holds_pin]
        if len(held) < 2:
            return
        states = await asyncio.gather(*(self._transport.pinned_state(c.spec.durable) for c in self._consumers))
        # Each instance keeps one request out per partition, but a request being renewed is missing for a
        # moment and one taken for lost can be counted twice: the median of the partitions is robust to both.
        instances = max(1, statistics.median_high(state.waiting for state in states))
        share = math.ceil(len(self._consumers) / instances)
        movable = [c for c in held if c.idle or c.spec.durable.max_ack_pending == 1]
        surplus = random.sample(movable, min(len(movable), len(held) - share)) if len(held) > share else []
        for consumer in surplus:
            await consumer.release_pin()
        if surplus:
            logger.info(
                "handler %s: handed %d partition(s) on (%s): held %d of %d, share %d with %d instance(s) pulling",
                self._handler,
                len(surplus),
                ", ".join(sorted(c.spec.durable.name for c in surplus)),
                len(held),
                len(self._consumers),
                share,
                instances,
            )
