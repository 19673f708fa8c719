"""The schema registry on real nats-servers: services register what they publish, breaking versions are refused,
and a process without the generated code decodes every event from its ce-dataschema."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from eventwire import App, Publication, SchemaRefused, Stream
from eventwire.contracts import compile_protos, schema_ref
from eventwire.contracts._descriptor_sets import descriptor_set_of, event_types
from eventwire.contracts._lint import descriptor_set
from eventwire.registry import BUCKET, SchemaRegistry
from eventwire.server import EmbeddedServer
from eventwire.testing import EmbeddedCluster
from eventwire.transport import ConnectOptions, JetStreamTransport
from eventwire.transport.memory import MemoryTransport
from eventwire.ui._views import browse

ROOT = Path(__file__).parent.parent
DEMO_PROTO = ROOT / "eventwire" / "demo" / "proto"

SHIPPING = """syntax = "proto3";
package regtest.shipping.v1;

message Money {
  int64 cents = 1;
  string currency = 2;
}

message ParcelShipped {
  string parcel_id = 1;
  Money price = 2;
  repeated string items = 3;
  int64 shipped_at_ms = 4;
}
"""
MEMBERS = """syntax = "proto3";
package regtest.members.v1;

enum Tier {
  TIER_UNSPECIFIED = 0;
  TIER_GOLD = 1;
}

message MemberJoined {
  string member_id = 1;
  Tier tier = 2;
  map<string, string> tags = 3;
}
"""
TICKETS = """syntax = "proto3";
package regtest.tickets.v1;

message TicketSold {{
{fields}
}}
"""
FIRST = "  string ticket_id = 1;\n  int32 seats = 2;"
COMPATIBLE = FIRST + "\n  string venue = 3;"  # a field added
BREAKING = "  string ticket_id = 1;\n  int64 seats = 2;\n  bool open_air = 3;"  # a type changed, number 3 reused
AFTER_CUT_OVER = "  bytes ticket_id = 1;\n  int64 seats = 2;"


def write_proto(folder: Path, relative: str, text: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return folder


def tickets(folder: Path, fields: str) -> Path:
    return write_proto(folder, "regtest/tickets/v1/tickets.proto", TICKETS.format(fields=fields))


def ticket_class(folder: Path) -> type[Message]:
    """A TicketSold class of the version under ``folder``, from a private pool (versions never meet)."""
    (found,) = event_types(descriptor_set(folder, with_imports=True))
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ModuleType, ModuleType]]:
    """The two services' generated code, importable in this process only."""
    root = tmp_path_factory.mktemp("registry")
    source = write_proto(root / "proto", "regtest/shipping/v1/shipping.proto", SHIPPING)
    write_proto(source, "regtest/members/v1/members.proto", MEMBERS)
    compile_protos(source, root / "gen")
    sys.path.insert(0, str(root / "gen"))
    try:
        shipping = importlib.import_module("regtest.shipping.v1.shipping_pb2")
        members = importlib.import_module("regtest.members.v1.members_pb2")
        yield root, shipping, members
    finally:
        sys.path.remove(str(root / "gen"))


def clean_environment() -> dict[str, str]:
    """This process's environment without a PYTHONPATH: no generated code of the tests reaches the child."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventwire", *args],
        check=False,
        cwd=cwd,
        env=env or clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_third_process_decodes_two_services_events_with_no_generated_code(
    fresh_server: EmbeddedServer, generated: tuple[Path, ModuleType, ModuleType], tmp_path: Path
) -> None:
    _, shipping, members = generated
    stream = Stream("REG", ("reg.>",))
    shipped = shipping.ParcelShipped(
        parcel_id="p-1", price=shipping.Money(cents=1999, currency="EUR"), items=["a", "b"], shipped_at_ms=1764700000000
    )
    joined = members.MemberJoined(member_id="m-1", tier=members.TIER_GOLD, tags={"source": "shop"})
    apps = [
        App("shipping", streams=[stream], publishes=[Publication(shipping.ParcelShipped, "reg.shipped")]),
        App("members", streams=[stream], publishes=[Publication(members.MemberJoined, "reg.joined")]),
    ]
    for app in apps:
        await app.start(url=fresh_server.url)
    try:
        await apps[0].publisher.publish(shipped, subject="reg.shipped", key="p-1")
        await apps[1].publisher.publish(joined, subject="reg.joined", key="m-1")
    finally:
        for app in apps:
            await app.stop()

    environment = clean_environment()
    # The generated modules live only on this process's sys.path:
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import regtest.shipping.v1.shipping_pb2", cwd=tmp_path, env=environment,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await probe.wait() != 0
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventwire", "tail", "reg.>", "--last", "2", "--json", "--url", fresh_server.url,
        cwd=tmp_path, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert tail.stdout is not None
    lines = [json.loads(await asyncio.wait_for(tail.stdout.readline(), 30)) for _ in range(2)]
    tail.send_signal(signal.SIGINT)
    _, errors = await asyncio.wait_for(tail.communicate(), 20)
    assert tail.returncode == 0, errors

    # Published by the registry's latest version of the type, in a process without the generated code too.
    published = run_cli(
        "publish", "regtest.members.v1.MemberJoined", "--subject", "reg.joined", "--key", "m-2",
        "--data", '{"memberId": "m-2", "tier": "TIER_GOLD"}', "--url", fresh_server.url, cwd=tmp_path,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr

    assert [line["payload"] for line in lines] == [
        json_format.MessageToDict(shipped),
        json_format.MessageToDict(joined),
    ]
    assert [line["ce_type"] for line in lines] == [
        "regtest.shipping.v1.ParcelShipped",
        "regtest.members.v1.MemberJoined",
    ]
    assert "note" not in lines[0] and "note" not in lines[1]
    assert "stored in REG at sequence 3" in published.stdout
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))
    try:
        registry = await SchemaRegistry.open(transport, create=False)
        assert registry is not None
        assert await registry.types() == ["regtest.members.v1.MemberJoined", "regtest.shipping.v1.ParcelShipped"]
        (version,) = await registry.versions("regtest.shipping.v1.ParcelShipped")
        assert (version.version, version.registered_by) == (1, "shipping")
        assert version.schema_id == schema_ref(shipping.ParcelShipped)
        stored = await transport.nc.jetstream().get_last_msg("REG", "reg.joined")
        third = members.MemberJoined.FromString(stored.data)
        assert third == members.MemberJoined(member_id="m-2", tier=members.TIER_GOLD)
        assert stored.headers is not None and stored.headers["ce-dataschema"] == schema_ref(members.MemberJoined)
    finally:
        await transport.close()


async def test_an_event_whose_schema_is_not_registered_says_so_and_shows_hex(
    fresh_server: EmbeddedServer, generated: tuple[Path, ModuleType, ModuleType], tmp_path: Path
) -> None:
    _, shipping, _ = generated
    stream = Stream("REG", ("reg.>",))
    app = App("shipping", streams=[stream], publishes=[Publication(shipping.ParcelShipped, "reg.shipped")])
    await app.start(url=fresh_server.url)  # the registry exists, and holds this type's version only
    try:
        unknown = "urn:eventwire:schema:regtest.shipping.v1.ParcelShipped:00000000deadbeef"
        payload = shipping.ParcelShipped(parcel_id="p-9").SerializeToString()
        nc = app.transport.nc  # type: ignore[attr-defined]
        headers = {
            "ce-specversion": "1.0", "ce-id": "e-9", "ce-source": "/elsewhere",
            "ce-type": "regtest.shipping.v1.ParcelShipped", "ce-datacontenttype": "application/protobuf",
            "ce-dataschema": unknown,
        }  # fmt: skip
        await nc.jetstream().publish("reg.shipped", payload, headers=headers)
    finally:
        await app.stop()
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventwire", "tail", "reg.>", "--last", "1", "--json", "--url", fresh_server.url,
        cwd=tmp_path, env=clean_environment(), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert tail.stdout is not None
    line = json.loads(await asyncio.wait_for(tail.stdout.readline(), 30))
    tail.send_signal(signal.SIGINT)
    await asyncio.wait_for(tail.wait(), 20)
    assert line["payload"] == payload.hex()
    assert line["note"] == f"{len(payload)} bytes; schema {unknown} is not in the registry"


async def test_a_compatible_version_registers_and_a_breaking_one_is_refused_unless_allowed(
    fresh_server: EmbeddedServer, tmp_path: Path
) -> None:
    url = fresh_server.url
    first = run_cli("schema", "push", str(tickets(tmp_path / "v1", FIRST)), "--url", url, "--service", "ci", cwd=ROOT)
    assert first.returncode == 0, first.stderr

    compatible = ticket_class(tickets(tmp_path / "v2", COMPATIBLE))
    stream = Stream("TICKETS", ("tickets.>",))
    app = App("box-office", streams=[stream], publishes=[Publication(compatible, "tickets.sold")])
    await app.start(url=url)
    try:
        await app.publisher.publish(compatible(ticket_id="t-1", seats=2, venue="hall"), subject="tickets.sold")
        transport = app.transport
        assert isinstance(transport, JetStreamTransport)
        from eventwire._event_json import EventDecoder

        # The console reads events through the same decoder, with the registry's contract of a class it never saw.
        shown = await browse(transport.nc, EventDecoder(transport), "TICKETS")
    finally:
        await app.stop()

    breaking = ticket_class(tickets(tmp_path / "v3", BREAKING))
    refused_app = App("box-office", streams=[stream], publishes=[Publication(breaking, "tickets.sold")])
    with pytest.raises(SchemaRefused) as refused_at_start:
        await refused_app.start(url=url)
    refunds = 'syntax = "proto3";\npackage regtest.refunds.v1;\nmessage RefundIssued {\n  string ticket_id = 1;\n}\n'
    write_proto(tmp_path / "v3", "regtest/refunds/v1/refunds.proto", refunds)  # new, and fine on its own
    pushed = run_cli("schema", "push", str(tmp_path / "v3"), "--url", url, cwd=ROOT)
    listed_after_refusal = run_cli("schema", "list", "--json", "--url", url, cwd=ROOT)
    allowed = run_cli(
        "schema", "push", str(tmp_path / "v3"), "--url", url, "--allow-breaking", "--service", "release-2", cwd=ROOT
    )
    again = run_cli("schema", "push", str(tmp_path / "v3"), "--url", url, cwd=ROOT)
    listed = run_cli("schema", "list", "--json", "--url", url, cwd=ROOT)

    assert shown["events"][0]["payload"] == {"ticketId": "t-1", "seats": 2, "venue": "hall"}
    assert "registered version 1" in first.stdout
    # number 3: a new name, so a new JSON name, and a new type; number 2: a JSON number became a string
    rules = [
        "FIELD_SAME_JSON_NAME",
        "FIELD_SAME_NAME",
        "FIELD_WIRE_JSON_COMPATIBLE_TYPE",
        "FIELD_WIRE_JSON_COMPATIBLE_TYPE",
    ]
    found = refused_at_start.value.findings
    assert [change.split()[1] for change in found] == rules, found
    assert "regtest/tickets/v1/tickets.proto: FIELD_WIRE_JSON_COMPATIBLE_TYPE" in "\n".join(found)
    assert (
        str(refused_at_start.value)
        .splitlines()[0]
        .startswith(
            "regtest.tickets.v1.TicketSold: 4 breaking change(s) at level WIRE_JSON against registered version 2"
        )
    )
    assert pushed.returncode == 1
    assert [line.split()[1] for line in pushed.stdout.splitlines()[:4]] == rules, pushed.stdout
    assert "not registered" in pushed.stdout.splitlines()[4] and "Traceback" not in pushed.stderr
    assert pushed.stdout.splitlines()[5] == "nothing registered: 1 of 2 event type(s) refused"
    assert [t["type"] for t in json.loads(listed_after_refusal.stdout)] == ["regtest.tickets.v1.TicketSold"]
    assert allowed.returncode == 0, allowed.stderr
    assert "registered version 3" in allowed.stdout and allowed.stdout.count("  allowed: ") == 4
    assert again.returncode == 0 and "registered already by release-2" in again.stdout
    refund_types, entry = json.loads(listed.stdout)
    assert (refund_types["type"], entry["type"]) == ("regtest.refunds.v1.RefundIssued", "regtest.tickets.v1.TicketSold")
    assert [(v["version"], v["registered_by"], len(v["breaking_changes"])) for v in entry["versions"]] == [
        (1, "ci", 0),
        (2, "box-office", 0),
        (3, "release-2", 4),
    ]
    assert entry["versions"][1]["id"] == schema_ref(compatible)


def test_eventwire_run_of_an_app_breaking_the_registered_contract_prints_the_changes_and_exits_1(
    fresh_server: EmbeddedServer, tmp_path: Path
) -> None:
    first = run_cli("schema", "push", str(tickets(tmp_path / "v1", FIRST)), "--url", fresh_server.url, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    compile_protos(tickets(tmp_path / "v4", AFTER_CUT_OVER), tmp_path / "gen")
    (tmp_path / "gen" / "box_office.py").write_text(
        "from eventwire import App, Publication, Stream\n"
        "from regtest.tickets.v1.tickets_pb2 import TicketSold\n"
        'app = App("box-office", streams=[Stream("TICKETS", ("tickets.>",))],\n'
        '          publishes=[Publication(TicketSold, "tickets.sold")])\n'
    )
    run = run_cli("run", "box_office:app", "--url", fresh_server.url, "--app-dir", str(tmp_path / "gen"), cwd=tmp_path)
    assert run.returncode == 1
    errors = run.stderr.strip().splitlines()
    changes = [line for line in errors if line.startswith("regtest/tickets/v1/tickets.proto: ")]
    assert [line.split()[1] for line in changes] == ["FIELD_WIRE_JSON_COMPATIBLE_TYPE"] * 2, run.stderr
    assert any(".ticket_id (1)" in line for line in changes) and any(".seats (2)" in line for line in changes)
    assert errors[-1].startswith("error: regtest.tickets.v1.TicketSold: 2 breaking change(s) at level WIRE_JSON")
    assert "Traceback" not in run.stderr


async def test_instances_registering_one_version_at_once_store_it_once(fresh_server: EmbeddedServer) -> None:
    from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

    transports = [await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url)) for _ in range(6)]
    try:
        registries = [await SchemaRegistry.open(t) for t in transports]
        results = await asyncio.gather(
            *(r.register(OrderCreated, service=f"orders-{n}") for n, r in enumerate(registries) if r is not None)
        )
        info = await transports[0].nc.jetstream().stream_info(f"KV_{BUCKET}")
    finally:
        for transport in transports:
            await transport.close()
    assert {version for version, _ in results} == {results[0][0]} and results[0][0].version == 1
    assert sum(added for _, added in results) == 1
    assert info.state.last_seq == 2  # one contract, one history: nothing written twice


def test_pulled_sources_compile_to_the_registered_descriptors(fresh_server: EmbeddedServer, tmp_path: Path) -> None:
    from eventwire.demo.contracts.shop.orders.v1.orders_pb2 import OrderCreated

    pushed = run_cli("schema", "push", str(DEMO_PROTO), "--url", fresh_server.url, cwd=ROOT)
    by_type = run_cli("schema", "pull", "shop.orders.v1.OrderCreated", "--out", str(tmp_path / "a"),
                      "--url", fresh_server.url, cwd=ROOT)  # fmt: skip
    by_id = run_cli("schema", "pull", schema_ref(OrderCreated), "--out", str(tmp_path / "b"),
                    "--url", fresh_server.url, cwd=ROOT)  # fmt: skip
    missing = run_cli("schema", "pull", "shop.orders.v1.OrderShipped", "--out", str(tmp_path / "c"),
                      "--url", fresh_server.url, cwd=ROOT)  # fmt: skip

    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.count("registered version 1") == 13
    for result, folder in ((by_type, "a"), (by_id, "b")):
        assert result.returncode == 0, result.stderr
        assert "wrote 1 file(s)" in result.stdout
        (pulled,) = [c for c in event_types(descriptor_set(tmp_path / folder, with_imports=True))
                     if c.DESCRIPTOR.full_name == "shop.orders.v1.OrderCreated"]  # fmt: skip
        assert descriptor_set_of(pulled) == descriptor_set_of(OrderCreated)
        assert schema_ref(pulled) == schema_ref(OrderCreated)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: shop.orders.v1.OrderShipped: no version is registered"


@pytest.mark.timeout(180)
async def test_the_registry_on_a_cluster_survives_the_loss_of_a_node(
    jetstream_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    cluster = jetstream_cluster
    first = ticket_class(tickets(tmp_path / "v1", FIRST))
    stream = Stream("TICKETS", ("tickets.>",), replicas=3)
    app = App("box-office", streams=[stream], publishes=[Publication(first, "tickets.sold")])
    await app.start(url=cluster.url)
    await app.stop()
    leader = await cluster.stream_leader(f"KV_{BUCKET}")
    leader.kill()
    try:
        compatible = ticket_class(tickets(tmp_path / "v2", COMPATIBLE))
        started = time.monotonic()
        transport = await JetStreamTransport.connect(ConnectOptions.from_url(cluster.url))
        try:
            registry = await SchemaRegistry.open(transport, create=False)
            assert registry is not None
            version, added = await registry.register(compatible, service="box-office")
            took = time.monotonic() - started
            versions = await registry.versions("regtest.tickets.v1.TicketSold")
            decoded = await registry.message_class(versions[0].schema_id)
            info = await transport.nc.jetstream().stream_info(f"KV_{BUCKET}")
        finally:
            await transport.close()
    finally:
        leader.restart()
    print(f"registration with the bucket's leader killed took {took:.2f} s")
    assert added and version.version == 2
    assert info.config.num_replicas == 3
    assert [v.schema_id for v in versions] == [schema_ref(first), schema_ref(compatible)]
    assert decoded is not None and decoded.DESCRIPTOR.fields_by_name.keys() == first.DESCRIPTOR.fields_by_name.keys()


async def test_the_memory_broker_registers_and_refuses_as_the_server_does(tmp_path: Path) -> None:
    transport = MemoryTransport()
    stream = Stream("TICKETS", ("tickets.>",))
    first = App(
        "box-office",
        streams=[stream],
        publishes=[Publication(ticket_class(tickets(tmp_path / "v1", FIRST)), "tickets.sold")],
    )
    await first.start(transport=MemoryTransport(transport.broker))
    await first.stop()
    breaking = ticket_class(tickets(tmp_path / "v3", BREAKING))
    with pytest.raises(SchemaRefused) as refused:
        await App("box-office", streams=[stream], publishes=[Publication(breaking, "tickets.sold")]).start(
            transport=MemoryTransport(transport.broker)
        )
    quiet = App("reader", streams=[stream], publishes=[Publication(breaking, "tickets.sold")], register_schemas=False)
    await quiet.start(transport=MemoryTransport(transport.broker))
    await quiet.stop()
    registry = await SchemaRegistry.open(transport, create=False)
    assert registry is not None
    assert [v.version for v in await registry.versions("regtest.tickets.v1.TicketSold")] == [1]
    (change,) = refused.value.findings  # against version 1, which had no field 3
    assert change.split()[1:3] == ["FIELD_WIRE_JSON_COMPATIBLE_TYPE", "field"] and ".seats (2)" in change


async def test_a_damaged_registry_entry_is_reported_not_trusted(fresh_server: EmbeddedServer, tmp_path: Path) -> None:
    from google.protobuf import descriptor_pb2

    from eventwire._event_json import EventDecoder

    escaping = "urn:eventwire:schema:x.v1.ThingHappened:00000000000000aa"
    garbage = "urn:eventwire:schema:x.v1.ThingHappened:00000000000000bb"
    outside = descriptor_pb2.FileDescriptorSet(file=[descriptor_pb2.FileDescriptorProto(name="../../escaped.proto")])
    transport = await JetStreamTransport.connect(ConnectOptions.from_url(fresh_server.url))
    try:
        store = await transport.key_value(BUCKET)
        assert store is not None
        await store.create("schemas.x.v1.ThingHappened.00000000000000aa", outside.SerializeToString())
        await store.create("schemas.x.v1.ThingHappened.00000000000000bb", b"\xff\xfe not a descriptor set")
        decoder = EventDecoder(transport)
        payload, note = await decoder.decode("x.v1.ThingHappened", garbage, None, b"\x0a\x01a")
    finally:
        await transport.close()
    pulled = run_cli("schema", "pull", escaping, "--out", str(tmp_path / "out"), "--url", fresh_server.url, cwd=ROOT)

    assert payload is None and note is not None
    assert note.startswith(f"3 bytes; schema {garbage}: the registry's {garbage} is not a FileDescriptorSet")
    assert pulled.returncode == 1 and "outside --out: not written" in pulled.stderr
    assert len(pulled.stderr.strip().splitlines()) == 1
    assert not (tmp_path.parent / "escaped.proto").exists() and not (tmp_path / "out").exists()
