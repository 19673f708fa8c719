"""Partitioned streams and pinned consumers: per-key order across instances, on nats-server and the memory broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import nats
import pytest
from prometheus_client import REGISTRY, generate_latest

from eventwire import App, ConfigError, ConnectOptions, Delivery, Outgoing, Publisher, Stream
from eventwire._streams import Durable, fnv1a_32, key_token, partition_of
from eventwire.server import EmbeddedServer
from eventwire.testing import running
from eventwire.transport import JetStreamTransport, Transport
from eventwire.transport.memory import MemoryBroker, MemoryTransport

from .conftest import eventually, unique
from .events import OrderCreated
from .secured import PASSWORD, secured_server
from .test_metrics import scrape, value

ROOT = Path(__file__).parent.parent
ODD_KEYS = ["o-1", "a.b", "with space", "*", ">", "ünïcode", "~tilde", "x" * 200, "A=B", "tab\there"]


def test_fnv1a_and_key_tokens() -> None:
    # Published FNV-1a 32 test vectors.
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    assert key_token("order-17_A=") == "order-17_A="
    tokens = [key_token(k) for k in ODD_KEYS]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert token and not any(c in token for c in " \t.*>")
    assert key_token("a.b") == key_token("a.b")  # deterministic


def test_partitioned_streams_are_checked_when_declared() -> None:
    with pytest.raises(ConfigError, match="partitions must be between 1 and 1024"):
        Stream("P", ("p.*",), partitions=0)
    with pytest.raises(ConfigError, match="exactly one subject pattern without '>'"):
        Stream("P", ("p.>",), partitions=4)
    with pytest.raises(ConfigError, match="exactly one subject pattern without '>'"):
        Stream("P", ("p.*", "q.*"), partitions=4)
    stream = Stream("P", ("shop.*.orders",), partitions=4)
    assert stream.wire_subjects == ("shop.*.orders.*",)
    assert stream.partition_transform == (
        "shop.*.orders.*",
        "shop.{{wildcard(1)}}.orders.{{wildcard(2)}}.{{partition(4,2)}}",
    )


async def test_publishing_on_a_partitioned_stream_needs_a_key() -> None:
    stream = Stream(unique("P"), ("p.*",), partitions=4)
    transport = MemoryTransport()
    await transport.ensure_stream(stream)
    publisher = Publisher(transport, source="/tests", streams=[stream])
    with pytest.raises(ConfigError, match=r"is partitioned by key: publish on 'p\.created' with key="):
        await publisher.publish(OrderCreated(order_id="o-1"), subject="p.created")


@pytest.mark.timeout(120)
async def test_the_memory_broker_puts_every_key_in_the_partition_the_server_does(
    jetstream_server: EmbeddedServer,
) -> None:
    name = unique("PART")
    stream = Stream(name, (f"{name}.*",), partitions=8)
    keys = [f"customer-{i}" for i in range(3000)] + ODD_KEYS
    items = [Outgoing(OrderCreated(order_id=str(i)), subject=f"{name}.created", key=k) for i, k in enumerate(keys)]
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(jetstream_server.url))
    memory = MemoryTransport()
    try:
        for target in (transport, memory):
            await target.ensure_stream(stream)
            await Publisher(target, source="/tests", streams=[stream]).publish_many(items)
    finally:
        await transport.close()
    stored_by_server = await _stored_subjects(jetstream_server.url, name, len(keys))
    stored_by_memory = [m.subject for m in memory.broker.streams[name].messages.values()]
    assert stored_by_memory == stored_by_server
    partitions = [int(subject.rsplit(".", 1)[1]) for subject in stored_by_server]
    assert partitions == [partition_of(key_token(k), 8) for k in keys]
    assert set(partitions) == set(range(8))


async def _stored_subjects(url: str, stream: str, count: int) -> list[str]:
    nc = await nats.connect(url)
    try:
        subscription = await nc.jetstream().pull_subscribe(">", stream=stream)
        subjects: list[str] = []
        while len(subjects) < count:
            for message in await subscription.fetch(min(500, count - len(subjects)), timeout=5):
                subjects.append(message.subject)
                await message.ack()
        return subjects
    finally:
        await nc.close()


Handled = tuple[str, str, int, int, float]  # instance, key, number, partition, loop time


def _app(stream: Stream, log: list[Handled], instance: str, *, max_delay: float, ack_wait: float = 3.0) -> App:
    app = App("partitioned", dead_letters=False)

    @app.handler(OrderCreated, stream=stream, subject="p.created", ordered_by="key", ack_wait=ack_wait)
    async def record(order: OrderCreated, delivery: Delivery) -> None:
        key, number = order.order_id.split(":")
        partition = int(delivery.subject.rsplit(".", 1)[1])
        log.append((instance, key, int(number), partition, asyncio.get_running_loop().time()))
        await asyncio.sleep(random.uniform(0, max_delay))

    return app


def _events(subject: str, count: int, keys: int) -> list[Outgoing]:
    return [
        Outgoing(OrderCreated(order_id=f"k{i % keys}:{i}"), subject=subject, key=f"k{i % keys}") for i in range(count)
    ]


def _assert_key_order(handled: Iterable[tuple[str, int]], count: int) -> None:
    """Each key's events were handled in publish order; a redelivery only repeats the latest one."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, number in handled:
        by_key[key].append(number)
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), f"key {key} out of order: {numbers}"
    assert {n for numbers in by_key.values() for n in numbers} == set(range(count))


def _distinct(log: list[Handled]) -> int:
    return len({number for _, _, number, _, _ in log})


@pytest.mark.virtual_time
async def test_memory_broker_four_instances_keep_each_key_in_order_and_share_the_partitions() -> None:
    stream = Stream(unique("P"), ("p.*",), partitions=8)
    log: list[Handled] = []
    broker = MemoryBroker()
    apps = [_app(stream, log, f"i{n}", max_delay=0.02) for n in range(4)]
    async with (
        running(apps[0], MemoryTransport(broker)),
        running(apps[1], MemoryTransport(broker)),
        running(apps[2], MemoryTransport(broker)),
        running(apps[3], MemoryTransport(broker)),
    ):
        await apps[0].publisher.publish_many(_events("p.created", 4000, 200))
        await eventually(lambda: _distinct(log) == 4000, timeout=600)
    _assert_key_order(((k, n) for _, k, n, _, _ in log), 4000)
    assert {instance for instance, *_ in log} == {"i0", "i1", "i2", "i3"}
    # The first instance to pull held every partition; the others got theirs as pins were handed on,
    # and never more than a few times per partition.
    for partition in range(8):
        holders = [i for i, _, _, p, _ in log if p == partition]
        switches = sum(1 for a, b in itertools.pairwise(holders) if a != b)
        assert switches <= 6, (partition, switches)


@pytest.mark.virtual_time
async def test_memory_broker_a_crashed_instances_partitions_move_after_the_pinned_ttl() -> None:
    stream = Stream(unique("P"), ("p.*",), partitions=4)
    log: list[Handled] = []
    broker = MemoryBroker()
    victim_transport = MemoryTransport(broker)
    victim = _app(stream, log, "victim", max_delay=0.01)
    survivor = _app(stream, log, "survivor", max_delay=0.01)
    await victim.start(transport=victim_transport)  # first to pull: it gets every partition's pin
    try:
        async with running(survivor, MemoryTransport(broker)):
            await survivor.publisher.publish_many(_events("p.created", 400, 40))
            await eventually(lambda: sum(1 for i, *_ in log if i == "victim") >= 50)
            held = {int(c.spec.durable.name.rsplit("-p", 1)[1]) for c in victim.consumers if c.holds_pin}
            victim_transport.sever()  # as SIGKILL: no more pulls, and its acks never arrive
            killed_at = asyncio.get_running_loop().time()
            await eventually(lambda: _distinct(log) == 400, timeout=300)
    finally:
        await victim.stop()
    assert held
    _assert_key_order(((k, n) for _, k, n, _, _ in log), 400)
    took_over = min(t for i, _, _, p, t in log if i == "survivor" and p in held and t > killed_at)
    # The pinned TTL is ack_wait (3 s); the event the victim held comes back after its ack_wait, sooner.
    assert 3.0 <= took_over - killed_at <= 3.5, took_over - killed_at


@pytest.mark.virtual_time
async def test_memory_broker_an_instance_added_later_gets_partitions_as_pins_are_handed_on() -> None:
    broker = MemoryBroker()

    async def connect() -> Transport:
        return MemoryTransport(broker)

    await _instance_added_later(connect, resume_within=0.5)


@pytest.mark.timeout(120)
async def test_an_instance_added_later_gets_partitions_as_pins_are_handed_on(jetstream_server: EmbeddedServer) -> None:
    async def connect() -> Transport:
        options = ConnectOptions.from_url(jetstream_server.url)
        return await JetStreamTransport.connect(options, pull_expires=2.0, idle_heartbeat=0.5)

    await _instance_added_later(connect, resume_within=2.0)


async def _instance_added_later(connect: Callable[[], Awaitable[Transport]], *, resume_within: float) -> None:
    """The server leaves every pin with the first instance; the balancer hands half on to one that joins
    later, and when that one leaves (gracefully) its partitions go straight back."""
    stream = Stream(unique("P"), ("p.*",), partitions=8)
    log: list[Handled] = []
    first, later = (_app(stream, log, name, max_delay=0.02) for name in ("first", "later"))
    async with running(first, await connect()):
        publishing = asyncio.create_task(_trickle(first, 3000))
        await eventually(lambda: _distinct(log) >= 300, timeout=60)
        assert all(c.holds_pin for c in first.consumers)
        samples: list[tuple[int, int]] = []  # (pins the first instance holds, events the later one handled)

        async def sample() -> None:
            while True:
                samples.append((sum(c.holds_pin for c in first.consumers), sum(1 for i, *_ in log if i == "later")))
                await asyncio.sleep(0.005)

        async with running(later, await connect()):
            sampling = asyncio.create_task(sample())
            await eventually(lambda: sum(1 for i, *_ in log if i == "later") >= 200, timeout=60)
            sampling.cancel()
            shared = sum(c.holds_pin for c in later.consumers)
        left_at = asyncio.get_running_loop().time()  # a graceful stop hands its pins back at once
        await publishing
        await eventually(lambda: _distinct(log) == 3000, timeout=120)
    _assert_key_order(((k, n) for _, k, n, _, _ in log), 3000)
    # Nothing while the first instance held every pin; then, once its balancer handed some on, half.
    assert samples[0] == (8, 0)
    assert all(handled == 0 for pins, handled in samples if pins == 8)
    assert shared == 4
    back = {p for i, _, _, p, t in log if i == "later"}
    resumed = [min(t for i, _, _, p2, t in log if i == "first" and p2 == p and t > left_at) for p in back]
    print(f"\nthe later instance held {shared} of 8; its partitions back {max(resumed) - left_at:.3f}s after it left")
    assert max(resumed) - left_at < resume_within, max(resumed) - left_at


async def _trickle(app: App, count: int) -> None:
    """A steady producer: 10 events every 10 ms."""
    events = _events("p.created", count, 100)
    for start in range(0, count, 10):
        await app.publisher.publish_many(events[start : start + 10])
        await asyncio.sleep(0.01)


def _rows(path: Path) -> list[tuple[int, str, int, int, float, int]]:
    """pid, key, number, delivery count, unix time, partition: whole lines tests.services.partitioned wrote so far."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().rpartition("\n")[0].splitlines():
        pid, order_id, delivery, at, partition = line.split()
        key, number = order_id.split(":")
        rows.append((int(pid), key, int(number), int(delivery), float(at), int(partition)))
    return rows


def _service_env(stream: str, record: Path, *, partitions: int, ack_wait: float, max_delay: float) -> dict[str, str]:
    return {
        **os.environ,
        "TEST_STREAM": stream,
        "TEST_PARTITIONS": str(partitions),
        "TEST_RECORD": str(record),
        "TEST_ACK_WAIT": str(ack_wait),
        "TEST_MAX_DELAY": str(max_delay),
    }


async def _publish(url: str, stream: Stream, count: int, keys: int) -> None:
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(url))
    try:
        await transport.ensure_stream(stream)
        publisher = Publisher(transport, source="/tests", streams=[stream])
        await publisher.publish_many(_events(f"{stream.name}.created", count, keys))
    finally:
        await transport.close()


async def _settled(url: str, stream: str, partitions: int) -> bool:
    """Every partition durable has delivered everything and has nothing unacked."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i in range(partitions):
            info = await js.consumer_info(stream, f"partitioned-p{i}")
            if info.num_pending or info.num_ack_pending:
                return False
        return True
    finally:
        await nc.close()


EVENTS, KEYS, PARTITIONS = 10_000, 200, 8


@pytest.mark.timeout(300)
async def test_four_worker_processes_keep_each_key_in_order_over_eight_partitions(
    jetstream_server: EmbeddedServer, tmp_path: Path
) -> None:
    name = unique("PORD")
    stream = Stream(name, (f"{name}.*",), partitions=PARTITIONS)
    record, log = tmp_path / "record.txt", tmp_path / "supervisor.log"
    # Long enough for several balancing rounds (every ack_wait / 2): a handed-on pin lands on whichever
    # instance heads the partition's queue, so reaching the last instance can take a few.
    env = _service_env(name, record, partitions=PARTITIONS, ack_wait=3.0, max_delay=0.03)
    command = [sys.executable, "-m", "eventwire", "run", "tests.services.partitioned:app", "--workers", "4"]
    with log.open("wb") as sink:
        supervisor = await asyncio.create_subprocess_exec(
            *command, "--url", jetstream_server.url, "--log-level", "INFO", cwd=ROOT, env=env, stderr=sink
        )
    try:
        await eventually(lambda: log.read_text().count("partitioned started") == 4, timeout=60)
        started = time.monotonic()
        await _publish(jetstream_server.url, stream, EVENTS, KEYS)
        await eventually(lambda: len({n for _, _, n, *_ in _rows(record)}) == EVENTS, timeout=240)
        took = time.monotonic() - started
        await eventually(lambda: _settled(jetstream_server.url, name, PARTITIONS), timeout=30)
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(supervisor.wait(), 60)
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
    rows = _rows(record)
    assert code == 0, log.read_text()
    _assert_key_order(((key, number) for _, key, number, *_ in rows), EVENTS)
    by_worker = Counter(pid for pid, *_ in rows)
    handled = sorted(by_worker.values())
    print(f"\n{EVENTS} events, {KEYS} keys, {PARTITIONS} partitions, 4 workers: {took:.1f}s; per worker {handled}")
    assert len(by_worker) == 4, dict(by_worker)


@pytest.mark.timeout(300)
async def test_a_killed_instances_partitions_move_to_the_others_and_no_key_goes_out_of_order(
    jetstream_server: EmbeddedServer, tmp_path: Path
) -> None:
    name = unique("PKIL")
    stream = Stream(name, (f"{name}.*",), partitions=PARTITIONS)
    record = tmp_path / "record.txt"
    ack_wait = 3.0
    env = _service_env(name, record, partitions=PARTITIONS, ack_wait=ack_wait, max_delay=0.02)
    command = [
        sys.executable,
        "-m",
        "eventwire",
        "run",
        "tests.services.partitioned:app",
        "--url",
        jetstream_server.url,
    ]
    instances = []
    for number in range(4):
        with (tmp_path / f"instance-{number}.log").open("wb") as sink:
            instances.append(await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env, stderr=sink))
    try:
        await eventually(
            lambda: all("partitioned started" in (tmp_path / f"instance-{n}.log").read_text() for n in range(4)),
            timeout=60,
        )
        await _publish(jetstream_server.url, stream, EVENTS, KEYS)
        # Killed once every instance has its share, with most events still to come.
        await eventually(lambda: len({pid for pid, *_ in _rows(record)}) == 4, timeout=120)
        rows = _rows(record)
        victim = rows[-1][0]
        held = {p for pid, _, _, _, at, p in rows if pid == victim and at > rows[-1][4] - 1.0}
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        await eventually(lambda: len({n for _, _, n, *_ in _rows(record)}) == EVENTS, timeout=240)
        await eventually(lambda: _settled(jetstream_server.url, name, PARTITIONS), timeout=30)
    finally:
        for process in instances:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in instances:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
    rows = _rows(record)
    _assert_key_order(((key, number) for _, key, number, *_ in rows), EVENTS)
    assert held
    moved = {
        p: min(at for pid, _, _, _, at, q in rows if q == p and pid != victim and at > killed_at) - killed_at
        for p in held
    }
    redelivered = sum(1 for _, _, _, delivery, at, _ in rows if delivery > 1 and at > killed_at)
    print(
        f"\nkilled {victim} holding partitions {sorted(held)}; moved after "
        + ", ".join(f"p{p} {seconds:.2f}s" for p, seconds in sorted(moved.items()))
        + f" (pinned TTL {ack_wait:g}s); {redelivered} redelivered"
    )
    # The pin moves once no request has renewed it for its TTL; the unacked event comes back after ack_wait.
    assert all(seconds <= ack_wait + 5.0 for seconds in moved.values()), moved
    survivors = {pid for pid, _, _, _, at, _ in rows if at > killed_at}
    assert victim not in survivors and len(survivors) == 3


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventwire", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.timeout(120)
async def test_status_shows_each_partition_and_its_pin_and_unpin_moves_one(fresh_server: EmbeddedServer) -> None:
    stream = Stream(unique("PST"), ("p.*",), partitions=2)
    log: list[Handled] = []
    url = ("--url", fresh_server.url)
    # A long ack_wait: the balancer (every ack_wait / 2) stays out of the way, only the command moves pins.
    first, second = (_app(stream, log, name, max_delay=0.0, ack_wait=120.0) for name in ("first", "second"))
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))
    async with running(first, transport):
        await transport.ensure_durable(Durable("plain", stream.name, "p.>"))
        await first.publisher.publish_many(_events("p.created", 20, 10))
        await eventually(lambda: _distinct(log) == 20)
        async with running(second, await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))):
            status = await asyncio.to_thread(_cli, "status", "--json", *url)
            unpinned = await asyncio.to_thread(_cli, "consumer", "unpin", "partitioned-record-p0", *url)
            await second.publisher.publish_many(_events("p.created", 40, 10)[20:])
            order = ("shop.orders.v1.OrderCreated", "--data", '{"orderId": "k3:40"}', "--import", "tests.events")
            published = await asyncio.to_thread(_cli, "publish", *order, "--subject", "p.created", "--key", "k3", *url)
            await eventually(lambda: _distinct(log) == 41)
        not_pinned = await asyncio.to_thread(_cli, "consumer", "unpin", "plain", *url)
    consumers = {
        c["name"]: c for s in json.loads(status.stdout)["streams"] if s["name"] == stream.name for c in s["consumers"]
    }
    assert set(consumers) == {"partitioned-record-p0", "partitioned-record-p1", "plain"}
    assert consumers["partitioned-record-p0"]["pinned"] and consumers["partitioned-record-p1"]["pinned"]
    held = consumers["partitioned-record-p0"]["pinned"][0]
    assert unpinned.returncode == 0, unpinned.stderr
    assert unpinned.stdout == f"partitioned-record-p0: unpinned from {held}; the next instance to pull takes it\n"
    assert published.returncode == 0, published.stderr
    assert [(k, p) for _, k, n, p, _ in log if n == 40] == [("k3", partition_of("k3", 2))]
    after = [(i, p) for i, _, n, p, _ in log if n >= 20]
    # Partition 0 went to the only other instance pulling; partition 1 stayed where it was.
    assert {i for i, p in after if p == 0} == {"second"}
    assert {i for i, p in after if p == 1} == {"first"}
    assert not_pinned.returncode == 1
    assert (
        not_pinned.stderr.strip()
        == f"error: plain on {stream.name} is not a pinned durable (a partition of a partitioned handler)"
    )


@pytest.mark.virtual_time
async def test_metrics_carry_each_partitions_pending_and_which_partitions_this_instance_holds() -> None:
    stream = Stream(unique("PMET"), ("p.*",), partitions=4)
    broker = MemoryBroker()
    service = unique("pmet").lower()
    first = App(service, dead_letters=False, metrics_interval=0.2)
    gate = asyncio.Event()

    @first.handler(OrderCreated, stream=stream, subject="p.created", ordered_by="key", ack_wait=60.0)
    async def record(order: OrderCreated) -> None:
        await gate.wait()  # held: every partition has one event unacked, the rest pending

    first.enable_metrics()
    async with running(first, MemoryTransport(broker)):
        await first.publisher.publish_many(_events("p.created", 40, 8))
        await asyncio.sleep(1.0)  # deliveries and a metrics poll
        samples = scrape(generate_latest(REGISTRY).decode(), service)
        gate.set()
    durables = [f"{service}-record-p{i}" for i in range(4)]
    per_partition = Counter(partition_of(key_token(f"k{i % 8}"), 4) for i in range(40))
    for i, durable in enumerate(durables):
        labels = {"handler": "record", "stream": stream.name, "durable": durable}
        assert value(samples, "eventwire_partition_pinned", **labels) == (1 if per_partition[i] else 0)  # 0: absent
        assert value(samples, "eventwire_consumer_ack_pending_messages", **labels) == (1 if per_partition[i] else 0)
        assert value(samples, "eventwire_consumer_pending_messages", **labels) == max(0, per_partition[i] - 1)


@pytest.mark.timeout(120)
async def test_a_partitioned_service_runs_on_the_permissions_eventwire_authz_prints(tmp_path: Path) -> None:
    name = unique("PAUTH")
    stream = Stream(name, (f"{name}.*",), partitions=4)
    record = tmp_path / "record.txt"
    env = _service_env(name, record, partitions=4, ack_wait=3.0, max_delay=0.0)
    authz = [sys.executable, "-m", "eventwire", "authz", "tests.services.partitioned:app"]
    generated = (
        await asyncio.to_thread(subprocess.run, authz, cwd=ROOT, env=env, capture_output=True, text=True)
    ).stdout
    users = (
        f'{{ user: "partitioned", password: "{PASSWORD}", permissions: $PARTITIONED_PERMISSIONS }}, '
        f'{{ user: "admin", password: "{PASSWORD}" }}'
    )
    server = secured_server(tmp_path, generated + f"authorization {{ users = [ {users} ] }}\n")
    log = tmp_path / "service.log"
    service_env = {**env, "EVENTWIRE_USER": "partitioned", "EVENTWIRE_PASSWORD": PASSWORD}
    try:
        with log.open("wb") as sink:
            service = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "eventwire", "run", "tests.services.partitioned:app", "--url", server.url),
                *("--inbox-prefix", "_INBOX_partitioned", "--log-level", "INFO"),
                cwd=ROOT,
                env=service_env,
                stderr=sink,
            )
        try:
            await eventually(lambda: "partitioned started" in log.read_text(), timeout=60)
            admin = ConnectOptions.from_url(server.url, user="admin", password=PASSWORD)
            transport = await JetStreamTransport.connect(admin)
            try:
                await Publisher(transport, source="/tests", streams=[stream]).publish_many(
                    _events(f"{name}.created", 200, 20)
                )
            finally:
                await transport.close()
            await eventually(lambda: len({n for _, _, n, *_ in _rows(record)}) == 200, timeout=60)
            service.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(service.wait(), 30)
        finally:
            if service.returncode is None:
                service.kill()
    finally:
        server.stop()
    text = log.read_text()
    assert code == 0, text
    assert "holds its pin" in text
    assert "ermission" not in text and "could not hand its pin on" not in text, text
