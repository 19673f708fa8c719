"""The demo shop: its contracts, the fulfilment saga, and its services.

``eventwire.demo.shop`` holds the five services ``eventwire demo`` runs as processes. The three small
Apps here (``orders_service``, ``inventory_service``, ``notifications_service``: orders → inventory →
notifications in one process) are what the catalog, authz and tracing examples describe.
"""

from ._services import inventory_service, notifications_service, orders_service

__all__ = ["inventory_service", "notifications_service", "orders_service"]
