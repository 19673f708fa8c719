from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StockReserved(_message.Message):
    __slots__ = ("order_id", "reservation_id", "reserved_at_ms")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reservation_id: str
    reserved_at_ms: int
    def __init__(self, order_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., reserved_at_ms: _Optional[int] = ...) -> None: ...

class StockRejected(_message.Message):
    __slots__ = ("order_id", "sku", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    sku: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., sku: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StockLine(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class StockReservationRequested(_message.Message):
    __slots__ = ("order_id", "lines")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    lines: _containers.RepeatedCompositeFieldContainer[StockLine]
    def __init__(self, order_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[StockLine, _Mapping]]] = ...) -> None: ...

class StockReleaseRequested(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StockReleased(_message.Message):
    __slots__ = ("order_id", "reservation_id", "released_at_ms")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reservation_id: str
    released_at_ms: int
    def __init__(self, order_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., released_at_ms: _Optional[int] = ...) -> None: ...
