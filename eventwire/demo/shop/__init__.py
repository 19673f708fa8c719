"""The shop: five services, each its own process (``eventwire run eventwire.demo.shop.<service>:app``),
each with its own database, talking only through JetStream. docs/tutorial.md builds it step by step."""

SERVICES = ("orders", "inventory", "payments", "fulfilment", "notifications")

__all__ = ["SERVICES"]
