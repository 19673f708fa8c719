"""Event classes for tests: the demo's contracts, and classes built at run time for rule checks."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from eventwire.demo.contracts.shop.inventory.v1.inventory_pb2 import StockRejected, StockReserved
from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import LineItem, OrderCreated

__all__ = ["LineItem", "OrderCreated", "StockRejected", "StockReserved", "make_event_class"]


def make_event_class(package: str, name: str) -> type[Message]:
    """A Protobuf class ``package.name`` with one string field ``id``, in a private pool."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/') or 'root'}/{name.lower()}.proto", package=package, syntax="proto3"
    )
    message = file_proto.message_type.add(name=name)
    message.field.add(
        name="id",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}" if package else name))
