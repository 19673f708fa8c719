"""The header fast paths produce exactly what nats-py would, and refuse what it refuses."""

from __future__ import annotations

import pytest
from nats import errors
from nats.aio.client import Client
from nats.js import api

from eventwire._nats_client import encode_headers, parse_header_lines


def nats_py_encoding(headers: dict[str, str]) -> bytes:
    """What nats-py's own _send_publish puts on the wire for these headers."""
    sent: list[bytes] = []

    class Capture(Client):
        async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
            sent.append(cmd)

    import asyncio

    asyncio.run(Capture()._send_publish("s", "", b"", 0, headers))
    command = sent[0]
    header_length = int(command.split(b"\r\n", 1)[0].split()[-2])
    return command.split(b"\r\n", 1)[1][:header_length]


@pytest.mark.parametrize(
    "headers",
    [
        {"ce-id": "1", "ce-type": "shop.orders.v1.OrderCreated", "Nats-Msg-Id": "ord-1"},
        {"k": "  padded  ", " spaced-key ": "v"},
        {"inject": "a\r\nPUB x 1\r\n", "lf": "a\nb", "cr": "a\rb"},
        {"": "skipped", "empty": ""},
        {"utf8": "naïve ✓"},
        {"nbsp": "\u00a0x\u00a0", "tab": "\tx", "vt": "a\x0bb"},
        # nats-py's KV and publish(stream=) key their headers with str enums
        {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0", "ce-id": "1"},
    ],
)
def test_encoding_matches_nats_py(headers: dict[str, str]) -> None:
    assert encode_headers(headers) == nats_py_encoding(headers)


@pytest.mark.parametrize("key", ["bad key", "colon:key", "naïve", "new\nline"])
def test_invalid_keys_are_refused(key: str) -> None:
    with pytest.raises(errors.BadHeaderError):
        encode_headers({"ok": "1", key: "v"})


@pytest.mark.parametrize(
    "raw",
    [
        b"ce-id: 1\r\nce-type: a.v1.ThingHappened\r\n\r\n",
        b"k:v\r\nk2:\tv2\r\nno-colon\r\n bad key: x\r\n\xff\xfe: y\r\nutf: na\xc3\xafve\r\nbroken: \xff\r\n",
        b"",
    ],
)
def test_parsing_matches_nats_py(raw: bytes) -> None:
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)
