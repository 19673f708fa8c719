"""Writing dead letters: the original message, untouched, plus why and where it failed.

A dead letter is published, and acknowledged by JetStream, before the
original is termed; when that publish fails the original is nak'd instead,
so an event is never lost on the way to the dead-letter stream.
"""

from __future__ import annotations

import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Final

from ._delivery import log_fields
from ._envelope import encode_value
from ._errors import PermissionDenied, PublishError
from ._publisher import send_with_retries, wire_size
from ._streams import Stream
from .transport import InboundMessage, Transport

logger = logging.getLogger("eventwire.dlq")

PREFIX: Final = "Eventwire-Dlq-"
REASON: Final = PREFIX + "Reason"
ERROR_TYPE: Final = PREFIX + "Error-Type"
ERROR: Final = PREFIX + "Error"
TRACEBACK: Final = PREFIX + "Traceback"
SUBJECT: Final = PREFIX + "Subject"
STREAM: Final = PREFIX + "Stream"
SEQUENCE: Final = PREFIX + "Sequence"
DELIVERY_COUNT: Final = PREFIX + "Delivery-Count"
SERVICE: Final = PREFIX + "Service"
HANDLER: Final = PREFIX + "Handler"
TIME: Final = PREFIX + "Time"
MSG_ID: Final = PREFIX + "Msg-Id"

TRACEBACK_LIMIT = 4000
DEFAULT_RETENTION = 14 * 24 * 3600.0
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")
# Headers that steer JetStream on publish: kept for the record under a Dlq name, never re-applied.
_STEERING = (
    "Nats-Msg-Id",
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Subject-Sequence",
    "Nats-Expected-Last-Msg-Id",
    "Nats-TTL",
)


def service_of_dead_letters(stream: str) -> str | None:
    """The service whose default dead-letter stream ``stream`` is (see :func:`dead_letter_stream`)."""
    return stream.removeprefix("DLQ-") if stream.startswith("DLQ-") else None


def dead_letter_stream(service: str, *, max_age: float = DEFAULT_RETENTION, replicas: int = 1) -> Stream:
    """The default dead-letter stream of a service: ``DLQ-<service>`` on ``dlq.<service>.>``."""
    return Stream(
        f"DLQ-{service}",
        (f"dlq.{service}.>",),
        max_age=max_age,
        replicas=replicas,
        description=f"Dead letters of service {service}",
    )


def dead_letter_subject(stream: Stream, handler: str) -> str:
    prefix = stream.subjects[0].removesuffix(".>")
    return f"{prefix}.{_UNSAFE_NAME.sub('_', handler)}"


class DeadLetterWriter:
    """Publishes dead letters of one service; used by its consumers."""

    def __init__(self, transport: Transport, service: str, stream: Stream, *, deadline: float = 5.0) -> None:
        self._transport = transport
        self._service = service
        self.stream = stream
        self._deadline = deadline

    async def write(
        self,
        message: InboundMessage,
        *,
        handler: str,
        reason: str,
        error: BaseException | None = None,
        detail: str | None = None,
    ) -> bool:
        """Publish the dead letter of ``message``; True once JetStream has stored it."""
        headers = {k: v for k, v in (message.headers or {}).items() if k not in _STEERING and not k.startswith(PREFIX)}
        original_msg_id = (message.headers or {}).get("Nats-Msg-Id")
        if original_msg_id is not None:
            headers[MSG_ID] = original_msg_id
        headers.update(
            {
                REASON: reason,
                SUBJECT: message.subject,
                STREAM: message.stream,
                SEQUENCE: str(message.stream_sequence),
                DELIVERY_COUNT: str(message.delivery_count),
                SERVICE: self._service,
                HANDLER: handler,
                TIME: datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                # One dead letter per stored message, however often dead-lettering is retried.
                "Nats-Msg-Id": f"dlq:{message.stream}:{message.stream_sequence}",
            }
        )
        if error is not None:
            headers[ERROR_TYPE] = f"{type(error).__module__}.{type(error).__qualname__}"
            headers[ERROR] = encode_value(str(error)[:1000])
            text = "".join(traceback.format_exception(error))[-TRACEBACK_LIMIT:]
            headers[TRACEBACK] = encode_value(text)
        elif detail is not None:
            headers[ERROR] = encode_value(detail[:1000])
        subject = dead_letter_subject(self.stream, handler)
        payload = message.data
        if wire_size(payload, headers) > self._transport.max_payload:
            headers.pop(TRACEBACK, None)
        try:
            await send_with_retries(self._transport, subject, payload, headers, deadline=self._deadline)
        except (PublishError, PermissionDenied) as exc:
            original = message.headers or {}
            fields = log_fields(
                message,
                original.get("ce-type"),
                original.get("ce-id"),
                service=self._service,
                handler=handler,
                outcome="nak",
            )
            logger.error(  # noqa: TRY400 -- the publish error says it all; its traceback adds nothing
                "dead letter for %s seq %d not stored: %s",
                message.subject,
                message.stream_sequence,
                exc,
                extra={"eventwire": fields},
            )
            return False
        return True
