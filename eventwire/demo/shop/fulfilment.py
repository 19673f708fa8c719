"""The fulfilment service: the saga that sees each order through (``eventwire/demo/_fulfilment.py``).

``SHOP_PAYMENT_TIMEOUT`` (5 s) is how long it waits for the payment's answer.
Run it: ``eventwire run eventwire.demo.shop.fulfilment:app``.
"""

from __future__ import annotations

from ... import App
from .._fulfilment import fulfilment_service
from ._settings import open_database, setting


def _from_environment() -> App:
    _, sessions = open_database("fulfilment")
    service, _ = fulfilment_service(sessions, payment_timeout=setting("PAYMENT_TIMEOUT", 5.0))
    return service


app = _from_environment()
