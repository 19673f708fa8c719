"""CloudEvents 1.0 over NATS headers (binary content mode), and structured mode on the way in.

Every attribute travels as a ``ce-<name>`` header whose value is percent-encoded
by the rule of the CloudEvents HTTP binding that the NATS binding adopts:
space, ``"``, ``%`` and everything outside printable ASCII are encoded as
UTF-8 bytes. ``traceparent``/``tracestate`` keep their W3C names, and
``Nats-Msg-Id`` carries the dedup id.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, NamedTuple
from urllib.parse import quote, unquote_to_bytes

from ._errors import EnvelopeError

SPEC_VERSION: Final = "1.0"
MSG_ID_HEADER: Final = "Nats-Msg-Id"
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents"

_PREFIX = "ce-"
_PREFIXES = ("ce-", "Ce-", "CE-", "cE-")
_CORE = ("id", "source", "type", "time", "subject", "datacontenttype", "dataschema")
_CORRELATION = "correlationid"
_CAUSATION = "causationid"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
_KNOWN = frozenset((*_CORE, _CORRELATION, _CAUSATION, "specversion"))
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")

_RFC3339 = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt ]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
# Printable ASCII except space, '"' and '%' passes unchanged.
_NEEDS_ENCODING = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def encode_value(value: str) -> str:
    """Percent-encode a header value as the CloudEvents binding prescribes."""
    if _NEEDS_ENCODING.search(value) is None:
        return value
    return quote(value, safe=_SAFE, encoding="utf-8", errors="strict")


# Source, type, content type and schema repeat on every event of a publisher: encoded once each.
_encode_repeated = functools.lru_cache(maxsize=1024)(encode_value)


def decode_value(value: str, header: str) -> str:
    """Undo :func:`encode_value`; malformed escapes and invalid UTF-8 are an EnvelopeError."""
    if "%" not in value:
        return value
    if _BAD_ESCAPE.search(value):
        raise EnvelopeError(f"header {header}: malformed percent-encoding in {value!r}")
    try:
        return unquote_to_bytes(value).decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"header {header}: percent-encoded bytes are not valid UTF-8: {exc}") from exc


_last_time: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """The current UTC time in RFC 3339 with milliseconds; formatted once per millisecond."""
    global _last_time
    now_ms = time.time_ns() // 1_000_000
    if now_ms != _last_time[0]:
        stamp = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
        _last_time = (now_ms, stamp.replace("+00:00", "Z"))
    return _last_time[1]


_NO_EXTENSIONS: Mapping[str, str] = MappingProxyType({})


class Envelope(NamedTuple):
    """The CloudEvents attributes of one event (immutable).

    A NamedTuple rather than a frozen dataclass: one is built per delivery,
    and this is several times cheaper to construct.
    """

    id: str
    source: str
    type: str
    time: str | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    extensions: Mapping[str, str] = _NO_EXTENSIONS
    specversion: str = SPEC_VERSION

    def to_headers(self, msg_id: str | None = None) -> dict[str, str]:
        """The NATS headers of this envelope; ``msg_id`` defaults to the event id."""
        return binary_headers(
            self.id,
            self.source,
            self.type,
            time=self.time,
            subject=self.subject,
            datacontenttype=self.datacontenttype,
            dataschema=self.dataschema,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
            extensions=self.extensions,
            msg_id=msg_id,
            specversion=self.specversion,
        )


def binary_headers(
    id: str,
    source: str,
    type: str,
    *,
    time: str | None = None,
    subject: str | None = None,
    datacontenttype: str | None = None,
    dataschema: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    extensions: Mapping[str, str] | None = None,
    msg_id: str | None = None,
    specversion: str = SPEC_VERSION,
) -> dict[str, str]:
    """The NATS headers of an event in binary content mode; ``msg_id`` defaults to ``id``."""
    headers = {
        "ce-specversion": specversion,
        "ce-id": encode_value(id),
        "ce-source": _encode_repeated(source),
        "ce-type": _encode_repeated(type),
    }
    if time is not None:
        headers["ce-time"] = encode_value(time)
    if subject is not None:
        headers["ce-subject"] = encode_value(subject)
    if datacontenttype is not None:
        headers["ce-datacontenttype"] = _encode_repeated(datacontenttype)
    if dataschema is not None:
        headers["ce-dataschema"] = _encode_repeated(dataschema)
    if correlation_id is not None:
        headers["ce-correlationid"] = encode_value(correlation_id)
    if causation_id is not None:
        headers["ce-causationid"] = encode_value(causation_id)
    if extensions:
        for name, value in extensions.items():
            headers[_PREFIX + name] = encode_value(value)
    if traceparent is not None:
        headers["traceparent"] = traceparent
    if tracestate is not None:
        headers["tracestate"] = tracestate
    headers[MSG_ID_HEADER] = msg_id if msg_id is not None else id
    return headers


def _from_attributes(
    attributes: dict[str, str], traceparent: str | None, tracestate: str | None, extensions: bool = True
) -> Envelope:
    """``extensions=False``: the caller knows every attribute is a core one."""
    for name in REQUIRED_ATTRIBUTES:
        if not attributes.get(name):
            raise EnvelopeError(f"missing required CloudEvents attribute {name!r}")
    if attributes["specversion"] != SPEC_VERSION:
        raise EnvelopeError(f"unsupported CloudEvents spec version {attributes['specversion']!r}")
    time = attributes.get("time")
    if time is not None:
        _check_time(time)
    return Envelope(
        id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        time=time,
        subject=attributes.get("subject"),
        datacontenttype=attributes.get("datacontenttype"),
        dataschema=attributes.get("dataschema"),
        correlation_id=attributes.get(_CORRELATION),
        causation_id=attributes.get(_CAUSATION),
        traceparent=traceparent,
        tracestate=tracestate,
        extensions={k: v for k, v in attributes.items() if k not in _KNOWN} if extensions else _NO_EXTENSIONS,
    )


_last_good_time = ""


def _check_time(time: str) -> None:
    # Events published in the same millisecond carry the same time: check each new one once.
    global _last_good_time
    if time == _last_good_time:
        return
    if _RFC3339.fullmatch(time) is None:
        raise EnvelopeError(f"time {time!r} is not an RFC 3339 timestamp, as CloudEvents requires")
    _last_good_time = time


@functools.lru_cache(maxsize=4096)
def _attribute_of(header: str) -> str | None:
    """The CloudEvents attribute a header carries (``ce-Type`` → ``type``), None for any other header."""
    return header[3:].lower() if header.startswith(_PREFIXES) else None


def parse_binary(headers: Mapping[str, str]) -> Envelope:
    """Read the envelope of a binary-mode message from its headers.

    Without ``ce-datacontenttype``, ``Content-Type`` says what the data is: the CloudEvents SDKs'
    HTTP-style binary mode writes only that.
    """
    attributes: dict[str, str] = {}
    extensions = False
    for key, value in headers.items():
        name = _attribute_of(key)
        if name is not None:
            attributes[name] = value if "%" not in value else decode_value(value, key)
            extensions = extensions or name not in _KNOWN
    if "datacontenttype" not in attributes:
        content_type = headers.get("Content-Type") or headers.get("content-type")
        if content_type:
            attributes["datacontenttype"] = content_type
    return _from_attributes(attributes, headers.get("traceparent"), headers.get("tracestate"), extensions)


def parse_structured(data: bytes) -> tuple[Envelope, bytes]:
    """Read a structured-mode (JSON event format) message: the envelope and the event data."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"structured CloudEvent is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise EnvelopeError("structured CloudEvent must be a JSON object")
    attributes: dict[str, str] = {}
    for name, value in document.items():
        if name in ("data", "data_base64"):
            continue
        if not _ATTRIBUTE_NAME.match(name):
            raise EnvelopeError(f"invalid CloudEvents attribute name {name!r}")
        attributes[name] = value if isinstance(value, str) else json.dumps(value)
    envelope = _from_attributes(attributes, attributes.pop("traceparent", None), attributes.pop("tracestate", None))
    return envelope, _structured_data(document)


def _structured_data(document: dict[str, Any]) -> bytes:
    if "data_base64" in document:
        try:
            return base64.b64decode(document["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise EnvelopeError(f"data_base64 is not valid base64: {exc}") from exc
    data = document.get("data")
    if data is None:
        return b""
    if isinstance(data, str) and not str(document.get("datacontenttype", "")).endswith("json"):
        return data.encode()
    return json.dumps(data).encode()


def parse_message(headers: Mapping[str, str] | None, data: bytes) -> tuple[Envelope, bytes]:
    """Read the envelope and event data of a message in either content mode."""
    if not headers:
        raise EnvelopeError("message has no headers: not a CloudEvent")
    content_type = headers.get("Content-Type") or headers.get("content-type")
    if content_type is not None and content_type.lower().startswith(STRUCTURED_CONTENT_TYPE):
        return parse_structured(data)
    return parse_binary(headers), data
