from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentRequested(_message.Message):
    __slots__ = ("order_id", "customer_id", "amount_cents")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    amount_cents: int
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., amount_cents: _Optional[int] = ...) -> None: ...

class PaymentCaptured(_message.Message):
    __slots__ = ("order_id", "payment_id", "amount_cents", "captured_at_ms")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    payment_id: str
    amount_cents: int
    captured_at_ms: int
    def __init__(self, order_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., captured_at_ms: _Optional[int] = ...) -> None: ...

class PaymentFailed(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RefundRequested(_message.Message):
    __slots__ = ("order_id", "payment_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    payment_id: str
    def __init__(self, order_id: _Optional[str] = ..., payment_id: _Optional[str] = ...) -> None: ...

class PaymentRefunded(_message.Message):
    __slots__ = ("order_id", "payment_id", "amount_cents")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    payment_id: str
    amount_cents: int
    def __init__(self, order_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., amount_cents: _Optional[int] = ...) -> None: ...
