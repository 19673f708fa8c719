from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LineItem(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class OrderCreated(_message.Message):
    __slots__ = ("order_id", "customer_id", "items", "total_cents", "created_at_ms")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    items: _containers.RepeatedCompositeFieldContainer[LineItem]
    total_cents: int
    created_at_ms: int
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[LineItem, _Mapping]]] = ..., total_cents: _Optional[int] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class OrderConfirmed(_message.Message):
    __slots__ = ("order_id", "payment_id", "confirmed_at_ms")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    payment_id: str
    confirmed_at_ms: int
    def __init__(self, order_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., confirmed_at_ms: _Optional[int] = ...) -> None: ...

class OrderCancelled(_message.Message):
    __slots__ = ("order_id", "reason", "cancelled_at_ms")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    cancelled_at_ms: int
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ..., cancelled_at_ms: _Optional[int] = ...) -> None: ...
