"""The settlement chain: outcomes from middleware, the fixed order of its steps, and how failures are logged."""

from __future__ import annotations

import logging

import pytest

from eventwire import App, Delivery, Next, Outcome, Reject, RetryPolicy, Stream
from eventwire.testing import running

from .events import OrderCreated

ORDERS = Stream("ORDERS", ("orders.>",))


@pytest.mark.virtual_time
async def test_middleware_may_replace_the_outcome_with_its_own() -> None:
    seen: list[int] = []

    def hold_first_delivery(next_step: Next) -> Next:
        async def step(delivery: Delivery) -> Outcome | None:
            if delivery.delivery_count == 1:
                return Outcome.nak(7.0, "not yet")
            return await next_step(delivery)

        return step

    app = App("mw", middleware=[hold_first_delivery])

    @app.handler(OrderCreated, stream=ORDERS)
    async def handle(order: OrderCreated, delivery: Delivery) -> None:
        seen.append(delivery.delivery_count)

    async with running(app) as probe:
        settlements = await probe.publish(OrderCreated(order_id="o-1"), subject="orders.created", timeout=60)
    assert [(s.outcome, s.delay, s.reason) for s in settlements] == [("nak", 7.0, "not yet"), ("ack", None, None)]
    assert seen == [2]


@pytest.mark.virtual_time
async def test_middleware_sits_inside_retry_and_dead_lettering() -> None:
    """It sees the handler's exception first; an outcome it returns still goes through dead-lettering."""
    caught: list[str] = []

    def dead_letter_value_errors(next_step: Next) -> Next:
        async def step(delivery: Delivery) -> Outcome | None:
            try:
                return await next_step(delivery)
            except ValueError as exc:
                caught.append(repr(exc))
                return Outcome.dead_letter("bad-value", error=exc)

        return step

    app = App("mw", middleware=[dead_letter_value_errors])

    @app.handler(OrderCreated, stream=ORDERS, retry=RetryPolicy(transient=(Exception,)))
    async def handle(order: OrderCreated) -> None:
        raise ValueError("no such sku")

    async with running(app) as probe:
        settlements = await probe.publish(OrderCreated(order_id="o-1"), subject="orders.created")
        letters = [p for p in probe.published if p.subject == "dlq.mw.handle"]
    assert caught == ["ValueError('no such sku')"]
    assert [s.outcome for s in settlements] == ["term"]  # not nak'd by the retry policy outside it
    assert settlements[0].reason == "dead-lettered, bad-value: ValueError('no such sku')"
    assert len(letters) == 1


@pytest.mark.virtual_time
async def test_a_reject_is_one_warning_and_an_unexpected_error_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("mw")

    @app.handler(OrderCreated, stream=ORDERS, retry=RetryPolicy(max_deliveries=1))
    async def handle(order: OrderCreated) -> None:
        if order.order_id == "refused":
            raise Reject("an order must cost something")
        raise KeyError("sku-42")

    async with running(app) as probe:
        await probe.publish(OrderCreated(order_id="refused"), subject="orders.created")
        await probe.publish(OrderCreated(order_id="broken"), subject="orders.created")
    records = [r for r in caplog.records if r.name == "eventwire.consumer" and "dead-lettered" in r.getMessage()]
    refused, broken = records
    assert refused.levelno == logging.WARNING and refused.exc_info is None
    assert "rejected: Reject('an order must cost something')" in refused.getMessage()
    assert broken.levelno == logging.ERROR and broken.exc_info is not None
    assert "max-deliveries: KeyError('sku-42')" in broken.getMessage()
