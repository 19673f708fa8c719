from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message

DESCRIPTOR: _descriptor.FileDescriptor

class SagaTimerFired(_message.Message):
    __slots__ = ("due_at_ms", "key", "saga", "timer", "timer_id")
    SAGA_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TIMER_FIELD_NUMBER: _ClassVar[int]
    TIMER_ID_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    saga: str
    key: str
    timer: str
    timer_id: str
    due_at_ms: int
    def __init__(
        self,
        saga: str | None = ...,
        key: str | None = ...,
        timer: str | None = ...,
        timer_id: str | None = ...,
        due_at_ms: int | None = ...,
    ) -> None: ...
