"""``python -m eventwire.demo.shop init [SERVICE ...]``: the services' tables, as ``eventwire demo`` makes them.

Each service's database is the one it runs with: ``SHOP_DB_<SERVICE>`` (in schema ``SHOP_SCHEMA_<SERVICE>``),
else SQLite in ``SHOP_DATA``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..._connect_options import redact_url
from ..._errors import EventwireError
from . import SERVICES
from ._prepare import prepare
from ._settings import database_url, open_database

USAGE = f"usage: python -m eventwire.demo.shop init [{' '.join(SERVICES)}]"


async def _init(services: list[str]) -> None:
    for service in services:
        engine, _ = open_database(service)
        schema = os.environ.get(f"SHOP_SCHEMA_{service.upper()}")
        try:
            if schema:
                async with engine.begin() as conn:
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await prepare(service, engine)
        finally:
            await engine.dispose()
        where = redact_url(database_url(service)) + (f", schema {schema}" if schema else "")
        print(f"{service}: tables ready in {where}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "init":
        print(USAGE, file=sys.stderr)
        return 2
    services = argv[1:] or list(SERVICES)
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        print(f"error: no service {unknown[0]!r}; {USAGE.removeprefix('usage: ')}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_init(services))
    except (OSError, SQLAlchemyError, EventwireError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
