"""Three services for ``eventwire topology`` tests, as module-level Apps the CLI can load.

Besides a healthy chain (orders → inventory → notifications) they hold every case the
topology must warn about: an event nobody consumes (StockRejected), one nobody publishes
(PaymentFailed), one consumed on a subject it is never published on (OrderCreated on
``orders.archived``), and a subject full of characters that need escaping.
"""

from __future__ import annotations

from google.protobuf.message import Message

from eventwire import App, Publication, Stream
from tests.events import OrderCreated, StockRejected, StockReserved, make_event_class

PaymentFailed = make_event_class("shop.payments.v1", "PaymentFailed")

ORDERS = Stream("ORDERS", ("orders.>",))
INVENTORY = Stream("INVENTORY", ("inventory.>",))
AUDIT = Stream("AUDIT", ("audit.>",))
PAYMENTS = Stream("PAYMENTS", ("payments.>",))
ODD_SUBJECT = 'audit."stock"<all#1&|'

received: list[Message] = []

orders = App("orders", streams=[ORDERS], publishes=[Publication(OrderCreated, "orders.created")])

inventory = App(
    "inventory",
    streams=[ORDERS, INVENTORY, AUDIT],
    publishes=[
        Publication(StockReserved, "inventory.reserved"),
        Publication(StockRejected, "inventory.rejected"),
        Publication(StockReserved, ODD_SUBJECT),
    ],
)


@inventory.handler(OrderCreated, stream=ORDERS, subject="orders.created", durable="svc-inventory")
async def reserve_stock(order: OrderCreated) -> None:
    """Reserve the stock of every line of the order."""
    received.append(order)


notifications = App("notifications", streams=[INVENTORY, ORDERS, PAYMENTS])


@notifications.handler(StockReserved, stream=INVENTORY, subject="inventory.>", durable="svc-notifications")
async def notify_customer(event: StockReserved) -> None:
    received.append(event)


@notifications.handler(PaymentFailed, stream=PAYMENTS, subject="payments.failed", durable="svc-payment-alerts")
async def alert_payment_failed(event: Message) -> None:
    received.append(event)


@notifications.handler(OrderCreated, stream=ORDERS, subject="orders.archived", durable="svc-archive-mail")
async def mail_archived_order(order: OrderCreated) -> None:
    received.append(order)
