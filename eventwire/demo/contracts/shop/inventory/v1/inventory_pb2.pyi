from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

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
