"""Idempotent inbox: a handler's effects and the record of the event commit together.

A redelivery of an event already recorded for that handler is acked without
running the handler again. See docs/outbox-inbox.md.
"""

from ._inbox import Inbox, claim_event, create_tables, inbox_table, metadata

__all__ = ["Inbox", "claim_event", "create_tables", "inbox_table", "metadata"]
