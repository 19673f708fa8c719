"""nats-py's client with faster header encoding and decoding, and permission denials routed to their waiters.

Every event carries about ten headers, and nats-py spends more time on them
than on anything else: per-character checks when parsing, a regex and a
translate per header when publishing. These overrides produce the same wire
format and keep the same guarantees (valid token keys, no CR/LF injection),
checking a whole header block at once. They replace two private methods, so
the nats-py minor version is pinned in pyproject.toml and the round trip is
covered by the tests on a real server.

The server answers a refused publish or subscription with an asynchronous
``-ERR`` that names the subject (lowercased by nats-py); nothing else tells
the waiting request or publish. :meth:`EventwireClient.report_denial` hands
each one to the listeners that wait on it, so they fail at once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from nats import errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.protocol import command

from ._errors import PermissionDenied

_DENIAL = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"')
DenialListener = Callable[[PermissionDenied], bool]
# subject, reply, payload, headers: a delivery handed over without a Msg, a queue or a task.
DirectSink = Callable[[str, str, bytes, "dict[str, str] | None"], None]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_KEY = re.compile(_TOKEN)
# Header names already found to be tokens: an App sends the same dozen again and again.
_TOKEN_KEYS: set[str] = set()
_MAX_TOKEN_KEYS = 1024
# What bytes.strip() removes, so str and bytes parsing agree.
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """``Name: Value`` lines into a dict; lines without a colon or with a malformed name are skipped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _parse_header_lines_bytes(raw)
    out: dict[str, str] = {}
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip(_ASCII_SPACE)
        if not key.isascii() or len(key.split(None, 1)) > 1:
            continue
        out[key] = value.strip(_ASCII_SPACE)
    return out


def _parse_header_lines_bytes(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if len(key.split(None, 1)) > 1:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


def encode_headers(headers: dict[str, Any]) -> bytes:
    """The header block nats-py would send; the common case is checked for the whole block at once."""
    if _sent_unchanged(headers):
        block = "".join([f"{key}: {value}\r\n" for key, value in headers.items()])
    else:
        block = _encode_headers_carefully(headers)
    return b"NATS/1.0\r\n" + block.encode() + b"\r\n"


def _sent_unchanged(headers: dict[str, Any]) -> bool:
    """Whether nats-py would send each line as it is: a token key, a value with no CR/LF and nothing to strip."""
    for key, value in headers.items():
        if type(key) is not str:  # nats-py's own keys are str enums, which format as "Header.MSG_ID"
            return False
        if key not in _TOKEN_KEYS:
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                return False
            if len(_TOKEN_KEYS) < _MAX_TOKEN_KEYS:
                _TOKEN_KEYS.add(key)
        if not isinstance(value, str) or (value and (value[0].isspace() or value[-1].isspace())):
            return False
    values = "".join(headers.values())
    return "\r" not in values and "\n" not in values


def _encode_headers_carefully(headers: dict[str, Any]) -> str:
    """nats-py's rules one header at a time: strip, skip empty keys, refuse bad keys, neutralise CR/LF."""
    lines = []
    for raw_key, raw_value in headers.items():
        key = raw_key.strip()
        if not key:
            continue
        if not _KEY.fullmatch(key):
            raise errors.BadHeaderError(key)
        lines.append(f"{key}: {str(raw_value).strip().translate(_NEWLINES)}\r\n")
    return "".join(lines)


def server_version(nc: Client) -> tuple[int, int, int]:
    """The connected server's version, to compare with the release that brought a feature."""
    reported = nc.connected_server_version
    return (reported.major, reported.minor, reported.patch)


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def parse_denial(message: str) -> PermissionDenied | None:
    """The denial in a server error such as ``permissions violation for publish to "orders.x"``."""
    match = _DENIAL.search(message.lower())
    if match is None:
        return None
    return PermissionDenied("publish" if match.group(1) == "publish" else "subscribe", match.group(2))


class EventwireClient(Client):
    _parse_header_lines = staticmethod(parse_header_lines)

    def __init__(self) -> None:
        super().__init__()
        self._denial_listeners: list[DenialListener] = []
        self._direct: dict[int, DirectSink] = {}

    async def subscribe_direct(self, subject: str, sink: DirectSink) -> Any:
        """Subscribe with ``sink`` called in the reading task for each message, before the next one is read.

        For a high-rate subscription whose handling is quick and never blocks (JetStream deliveries
        into a buffer): no Msg object, no queue and no task switch per message. ``sink`` must not raise.
        """
        subscription = await self.subscribe(subject)
        self._direct[subscription._id] = sink
        return subscription

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        sink = self._direct.get(sid)
        if sink is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        if sid not in self._subs:  # unsubscribed: what still arrives is dropped, as nats-py does
            del self._direct[sid]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        sink(subject.decode(), reply.decode(), data, await self._process_headers(headers))

    def on_denial(self, listener: DenialListener) -> Callable[[], None]:
        """Call ``listener`` with every denial until the returned function is called.

        The listener returns True when the denial was about something it waits for.
        """
        self._denial_listeners.append(listener)
        return lambda: self._denial_listeners.remove(listener) if listener in self._denial_listeners else None

    def report_denial(self, denial: PermissionDenied) -> bool:
        """Hand ``denial`` to the listeners; False when none of them was waiting for it."""
        claimed = False
        for listener in list(self._denial_listeners):
            claimed = listener(denial) or claimed
        return claimed

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        """nats-py's request, failing with :class:`PermissionDenied` as soon as the server refuses it."""
        loop = asyncio.get_running_loop()
        refused: asyncio.Future[PermissionDenied] = loop.create_future()
        wanted = subject.lower()
        inbox = self._inbox_prefix.decode().lower() + "."

        def listen(denial: PermissionDenied) -> bool:
            ours = (denial.operation == "publish" and denial.subject == wanted) or (
                denial.operation == "subscribe" and denial.subject.startswith(inbox)
            )
            if ours and not refused.done():
                refused.set_result(denial)
            return ours

        stop_listening = self.on_denial(listen)
        answer: asyncio.Future[Msg] = asyncio.ensure_future(
            super().request(subject, payload, timeout, old_style, headers)
        )
        try:
            await asyncio.wait((answer, refused), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            answer.cancel()
            raise
        finally:
            stop_listening()
        if not answer.done():
            answer.cancel()
            denial = refused.result()
            shown = subject if denial.operation == "publish" else denial.subject
            raise PermissionDenied(denial.operation, shown, "request")
        return answer.result()

    async def publish_reply(self, subject: str, payload: bytes = b"") -> None:
        """A header-less publish to a subject the server made (an ack to ``$JS.ACK…``): ``publish`` without
        re-checking the subject, which costs more than the rest of an ack."""
        self._check_open()
        await self._write(command.pub_cmd(subject, "", payload), 1, len(payload), buffered=len(payload))

    async def publish_all(self, messages: list[tuple[str, str, dict[str, str], bytes]]) -> None:
        """``(subject, reply, headers, payload)`` each, as ``publish`` sends them, written into the buffer at once.

        For a run of messages whose subjects and replies the caller made and checked (a fast-ingest batch):
        one buffer append instead of one per message.
        """
        self._check_open()
        commands = []
        size = 0
        for subject, reply, headers, payload in messages:
            if len(payload) > self._max_payload:
                raise errors.MaxPayloadError
            commands.append(command.hpub_cmd(subject, reply, encode_headers(headers), payload))
            size += len(payload)
        block = b"".join(commands)
        await self._write(block, len(commands), size, buffered=len(block))

    def _check_open(self) -> None:
        if self.is_closed:
            raise errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise errors.ConnectionDrainingError

    async def _write(self, block: bytes, messages: int, payload_bytes: int, *, buffered: int) -> None:
        """What nats-py's publish does after its checks: refuse when reconnecting with no room, count, buffer."""
        if not self.is_connected and (
            self._max_pending_size <= 0 or buffered + self._pending_data_size > self._max_pending_size
        ):
            raise errors.OutboundBufferLimitError
        self.stats["out_msgs"] += messages
        self.stats["out_bytes"] += payload_bytes
        await self._send_command(block)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def _send_publish(
        self, subject: str, reply: str, payload: bytes, payload_size: int, headers: dict[str, Any] | None
    ) -> None:
        if headers is None:
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        if subject == "":
            raise errors.BadSubjectError
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(command.hpub_cmd(subject, reply, encode_headers(headers), payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()
