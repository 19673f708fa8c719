"""Streams and durable consumers as declared in code."""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ._errors import ConfigError

Retention = Literal["limits", "interest", "workqueue"]
Storage = Literal["file", "memory"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_TOKEN = re.compile(r"^[^\s.*>]+$")
# Keys made of these go into a subject as they are; any other key is escaped (see key_token).
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_=-]{1,128}$")
MAX_PARTITIONS = 1024
# The priority group every instance of a partitioned handler pulls in.
PARTITION_GROUP = "eventwire"


def check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(f"{kind} name {name!r} may hold only letters, digits, '-' and '_'")


def check_subject(subject: str, *, wildcards: bool = True) -> None:
    """Raise ConfigError unless ``subject`` is a valid NATS subject (or filter)."""
    bad = _bad_token(subject, wildcards)
    if bad is not None:
        raise ConfigError(f"invalid subject {subject!r}: token {bad!r}")


@functools.lru_cache(maxsize=16384)  # a publisher sends to the same subjects again and again
def _bad_token(subject: str, wildcards: bool) -> str | None:
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if wildcards and (token == "*" or (token == ">" and i == len(tokens) - 1)):
            continue
        if not _TOKEN.match(token):
            return token
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more.

    ``subject`` may be a filter with wildcards itself: then ``pattern`` must match
    every subject the filter matches (``orders.>`` covers ``orders.*``, not the reverse).
    """
    pattern_tokens = pattern.split(".")
    tokens = subject.split(".")
    for i, token in enumerate(pattern_tokens):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or tokens[i] == ">" or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(pattern_tokens)


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some subject matches both filters ``a`` and ``b``."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != y and "*" not in (x, y):
            return False
    return True


def key_token(key: str) -> str:
    """The subject token an event's key becomes on a partitioned stream: deterministic and one-to-one.

    A key of letters, digits, ``_``, ``=`` and ``-`` (up to 128) is used as it is; any other key is
    ``~`` followed by its UTF-8 bytes in unpadded URL-safe base64, which no plain key can start with.
    """
    if _PLAIN_KEY.match(key):
        return key
    return "~" + base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode()


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits: the hash nats-server's ``partition`` subject transform uses."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def partitioned_stream_for(streams: Iterable[Stream], subject: str) -> Stream | None:
    """The partitioned stream among ``streams`` whose declared pattern takes ``subject``, if any."""
    return next((s for s in streams if s.partitions is not None and subject_matches(s.subjects[0], subject)), None)


def partition_of(token: str, partitions: int) -> int:
    """The partition nats-server assigns to a key token (``{{partition(n, i)}}`` over that one token)."""
    return fnv1a_32(token.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Stream:
    """A JetStream stream, provisioned idempotently when an App or Publisher starts.

    Durations are in seconds; ``None`` means unlimited. The defaults are the
    production ones: file storage, limits retention, a 2-minute duplicate window.
    ``allow_batched`` turns on fast-ingest batch publishing (nats-server 2.14 or later),
    ``allow_atomic`` atomic batches (2.12 or later), ``allow_msg_schedules`` message
    schedules (2.12 or later; with roll-ups and per-message TTLs, which schedules use).

    ``partitions=N`` (nats-server 2.11 or later) partitions the stream by event key: its one
    subject pattern (no ``>``) gets the key as one more token on the wire
    (``orders.created`` + key ``o-1`` → ``orders.created.o-1``), and the server appends the
    partition it computes from the key (``orders.created.o-1.3``). Handlers with
    ``ordered_by="key"`` then get a durable per partition, each pinned to one instance
    (docs/scaling.md).
    """

    name: str
    subjects: tuple[str, ...]
    retention: Retention = "limits"
    storage: Storage = "file"
    replicas: int = 1
    duplicate_window: float = 120.0
    max_age: float | None = None
    max_msg_size: int | None = None
    max_msgs: int | None = None
    max_bytes: int | None = None
    allow_batched: bool = False
    allow_atomic: bool = False
    allow_msg_schedules: bool = False
    partitions: int | None = None
    description: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.subjects, str):
            object.__setattr__(self, "subjects", (self.subjects,))
        check_name("stream", self.name)
        if not self.subjects:
            raise ConfigError(f"stream {self.name!r}: subjects must not be empty")
        for subject in self.subjects:
            check_subject(subject)
        if self.retention not in ("limits", "interest", "workqueue"):
            raise ConfigError(f"stream {self.name!r}: retention must be limits, interest or workqueue")
        if self.storage not in ("file", "memory"):
            raise ConfigError(f"stream {self.name!r}: storage must be file or memory")
        if not 1 <= self.replicas <= 5:
            raise ConfigError(f"stream {self.name!r}: replicas must be between 1 and 5")
        if self.duplicate_window <= 0:
            raise ConfigError(f"stream {self.name!r}: duplicate_window must be positive")
        if self.max_age is not None:
            if self.max_age <= 0:
                raise ConfigError(f"stream {self.name!r}: max_age must be positive or None")
            if self.duplicate_window > self.max_age:
                raise ConfigError(f"stream {self.name!r}: duplicate_window may not exceed max_age")
        for name in ("max_msg_size", "max_msgs", "max_bytes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"stream {self.name!r}: {name} must be positive or None")
        if self.partitions is not None:
            if not 1 <= self.partitions <= MAX_PARTITIONS:
                raise ConfigError(f"stream {self.name!r}: partitions must be between 1 and {MAX_PARTITIONS}")
            if len(self.subjects) != 1 or ">" in self.subjects[0].split("."):
                raise ConfigError(
                    f"stream {self.name!r}: partitions need exactly one subject pattern without '>' "
                    "(the key token is found by its position)"
                )

    @property
    def wire_subjects(self) -> tuple[str, ...]:
        """The subjects the stream takes on the wire: a partitioned one's pattern gets the key token."""
        if self.partitions is None:
            return self.subjects
        return (self.subjects[0] + ".*",)

    @property
    def partition_transform(self) -> tuple[str, str] | None:
        """The stream's subject transform (source, destination) that appends the partition, if partitioned."""
        if self.partitions is None:
            return None
        source = self.wire_subjects[0]
        tokens = source.split(".")
        wildcards = [i for i, token in enumerate(tokens) if token == "*"]
        mapped = list(tokens)
        for number, position in enumerate(wildcards, start=1):
            mapped[position] = f"{{{{wildcard({number})}}}}"
        mapped.append(f"{{{{partition({self.partitions},{len(wildcards)})}}}}")
        return source, ".".join(mapped)

    def stored_filter(self, subject: str, partition: int | None = None) -> str:
        """The filter, in stored subjects, of ``subject`` (a declared-level subject), one partition or all."""
        if self.partitions is None:
            return subject
        return f"{subject}.*.{'*' if partition is None else partition}"


@dataclass(frozen=True, slots=True)
class Durable:
    """A durable pull consumer with explicit ack on one stream.

    ``pinned`` makes it a pinned-client consumer (nats-server 2.11+): of the instances pulling
    in its priority group the server delivers to one, and moves the pin when that one has sent
    no pull request for ``ack_wait`` seconds (its pinned TTL).
    """

    name: str
    stream: str
    filter_subject: str
    ack_wait: float = 30.0
    max_deliver: int = 10
    max_ack_pending: int = 1000
    pinned: bool = False

    def __post_init__(self) -> None:
        check_name("durable", self.name)
        check_subject(self.filter_subject)
        if self.ack_wait < 0.1:
            raise ConfigError(f"durable {self.name!r}: ack_wait must be at least 0.1 seconds")
        if self.max_deliver < 1 and self.max_deliver != -1:
            raise ConfigError(f"durable {self.name!r}: max_deliver must be at least 1, or -1 for unlimited")
        if self.max_ack_pending < 1:
            raise ConfigError(f"durable {self.name!r}: max_ack_pending must be at least 1")
