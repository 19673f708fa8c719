"""Publishing without an App: a script, a cron job, a migration that emits events."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence

from ._connect_options import ConnectOptions, resolve_connect_options
from ._errors import ConfigError
from ._publisher import Publisher
from ._streams import Stream
from .transport import JetStreamTransport


@contextlib.asynccontextmanager
async def connect(
    url: str | None = None,
    *,
    options: ConnectOptions | None = None,
    source: str = "/scripts",
    streams: Sequence[Stream] = (),
    deadline: float = 30.0,
) -> AsyncIterator[Publisher]:
    """A :class:`Publisher` on a connection of its own, closed on exit::

        async with eventwire.connect(source="/jobs/backfill") as publisher:
            await publisher.publish(OrderCreated(order_id="o-1"), subject="orders.created")

    The server and credentials come as for an App and every command: ``options``, else ``url``,
    else the ``EVENTWIRE_*`` variables or a NATS context. With none of them it is a ConfigError:
    a script never starts a server of its own. ``streams`` are created (or checked) before the
    first publish; ``source`` is the events' CloudEvents source.
    """
    resolved = options if options is not None else resolve_connect_options(url=url)
    if resolved is None:
        raise ConfigError("no server: pass url= or options=, or set EVENTWIRE_URL or EVENTWIRE_CONTEXT")
    if resolved.name is None:
        resolved = dataclasses.replace(resolved, name=source)
    transport = await JetStreamTransport.connect(resolved)
    try:
        for stream in streams:
            await transport.ensure_stream(stream)
        yield Publisher(transport, source=source, deadline=deadline)
    finally:
        await transport.close()
