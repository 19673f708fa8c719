"""Differential test: ``eventwire schema check`` and the ``buf`` binary (PyPI wheel ``buf-bin``) agree.

Each change pair is checked at every level by both tools; they must give the same verdict and name
the same rules. The corpus covers every rule family of buf's v2 categories that events can meet.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from eventwire.contracts._breaking import LEVELS, check
from eventwire.contracts._lint import descriptor_set

BUF = Path(sysconfig.get_path("scripts")) / "buf"

ORDERS = "shop/orders/v1/orders.proto"
BASE = """syntax = "proto3";
package shop.orders.v1;
option go_package = "example.com/shop/orders/v1;ordersv1";
enum Channel {
  CHANNEL_UNSPECIFIED = 0;
  CHANNEL_WEB = 1;
  CHANNEL_STORE = 2;
  reserved 9;
  reserved "CHANNEL_FAX";
}
enum Carrier { CARRIER_UNSPECIFIED = 0; CARRIER_POST = 1; }
message LineItem { string sku = 1; int32 quantity = 2; }
message OrderCreated {
  reserved 20;
  reserved "legacy";
  string order_id = 1;
  int64 total_cents = 2;
  string coupon = 3;
  Channel channel = 4;
  oneof payer { string customer_id = 5; string company_id = 6; }
  repeated LineItem items = 7;
  map<string, string> labels = 8;
  optional string note = 9;
  int32 priority = 10;
  fixed64 checksum = 11;
  bytes signature = 12;
  string region = 13;
  message Audit { string by = 1; }
  Audit audit = 14;
  enum Source { SOURCE_UNSPECIFIED = 0; SOURCE_APP = 1; }
  Source source = 15;
}
message OrderShipped { string order_id = 1; }
message OrderCancelled { string order_id = 1; }
service OrderQueries {
  rpc GetOrder(OrderShipped) returns (OrderCreated);
  rpc ListOrders(OrderShipped) returns (stream OrderCreated);
}
"""

LEGACY = "shop/legacy/v1/legacy.proto"
LEGACY_BASE = """syntax = "proto2";
package shop.legacy.v1;
message PaymentCaptured {
  required string payment_id = 1;
  optional int32 attempts = 2 [default = 5];
  optional string memo = 3;
  optional int64 amount = 4;
  optional double rate = 5 [default = 1.5];
  extensions 100 to 199;
}
extend PaymentCaptured { optional string note = 100; }
enum Method { METHOD_CARD = 1; METHOD_CASH = 2; }
message PaymentRefunded { optional Method method = 1; }
"""

EDITION = "shop/edition/v1/edition.proto"
EDITION_BASE = """edition = "2023";
package shop.edition.v1;
enum Tier { TIER_UNSPECIFIED = 0; TIER_GOLD = 1; }
message MemberJoined {
  string member_id = 1;
  Tier tier = 2;
  int32 points = 3;
}
"""

SHIPPING = "shop/orders/v1/shipping.proto"
A = "a/v1/a.proto"
JAVA_FEATURES_HEADER = 'edition = "2023";\npackage a.v1;\nimport "google/protobuf/java_features.proto";\n'
MISC = "shop/misc/v1/misc.proto"
MISC_HEADER = 'syntax = "proto3";\npackage shop.misc.v1;\n'


class ChangePair(NamedTuple):
    name: str
    old: dict[str, str]
    new: dict[str, str]


def edit(name: str, before: str, after: str, path: str = ORDERS, base: str = BASE) -> ChangePair:
    assert before in base, f"{name}: {before!r} is not in the base"
    return ChangePair(name, {path: base}, {path: base.replace(before, after, 1)})


def legacy(name: str, before: str, after: str) -> ChangePair:
    return edit(name, before, after, LEGACY, LEGACY_BASE)


def edition(name: str, before: str, after: str) -> ChangePair:
    return edit(name, before, after, EDITION, EDITION_BASE)


MOVED = BASE.replace("message OrderShipped { string order_id = 1; }\n", 'import "shop/orders/v1/shipping.proto";\n')
MOVED = MOVED.replace('option go_package = "example.com/shop/orders/v1;ordersv1";\n', "", 1)
MOVED = MOVED.replace(
    "package shop.orders.v1;\n", 'package shop.orders.v1;\noption go_package = "example.com/shop/orders/v1;ordersv1";\n'
)
SHIPPING_FILE = (
    'syntax = "proto3";\npackage shop.orders.v1;\noption go_package = "example.com/shop/orders/v1;ordersv1";\n'
    "message OrderShipped { string order_id = 1; }\n"
)

COMMON = """syntax = "proto3";
package shop.common.v1;
enum Channel { CHANNEL_UNSPECIFIED = 0; CHANNEL_WEB = 1; CHANNEL_STORE = 2; CHANNEL_PHONE = 3; }
"""

CORPUS = [
    ChangePair("identical", {ORDERS: BASE}, {ORDERS: BASE}),
    edit("field added", "  Source source = 15;\n", "  Source source = 15;\n  string currency = 16;\n"),
    edit("field deleted", "  string coupon = 3;\n", ""),
    edit("field deleted, number reserved", "  string coupon = 3;\n", "  reserved 3;\n"),
    edit("field deleted, number and name reserved", "  string coupon = 3;\n", '  reserved 3;\n  reserved "coupon";\n'),
    edit("int64 to int32", "int64 total_cents = 2", "int32 total_cents = 2"),
    edit("int64 to uint64", "int64 total_cents = 2", "uint64 total_cents = 2"),
    edit("int32 to sint32", "int32 priority = 10", "sint32 priority = 10"),
    edit("int32 to bool", "int32 priority = 10", "bool priority = 10"),
    edit("int32 to an enum", "int32 priority = 10", "Carrier priority = 10"),
    edit("fixed64 to sfixed64", "fixed64 checksum = 11", "sfixed64 checksum = 11"),
    edit("string to bytes", "string region = 13", "bytes region = 13"),
    edit("bytes to string", "bytes signature = 12", "string signature = 12"),
    edit("message type changed", "Audit audit = 14", "LineItem audit = 14"),
    edit("enum type changed", "Channel channel = 4", "Carrier channel = 4"),
    edit("map value type changed", "map<string, string> labels", "map<string, int32> labels"),
    edit("singular to repeated", "string coupon = 3", "repeated string coupon = 3"),
    edit("repeated to singular", "repeated LineItem items = 7", "LineItem items = 7"),
    edit("explicit to implicit presence", "optional string note = 9", "string note = 9"),
    edit("field renamed", "string coupon = 3", "string voucher = 3"),
    edit("json_name set", "string coupon = 3", 'string coupon = 3 [json_name = "couponCode"]'),
    edit("field number reused", "  string coupon = 3;\n", "  int32 coupon_count = 3;\n"),
    edit("field moved out of a oneof", "string company_id = 6; }", "}\n  string company_id = 6;"),
    edit(
        "field moved into a oneof", "string company_id = 6; }\n", "string company_id = 6; string region = 13; }\n"
    )._replace(
        new={
            ORDERS: BASE.replace("string company_id = 6; }", "string company_id = 6; string region = 13; }").replace(
                "  string region = 13;\n", "", 1
            )
        }
    ),
    edit("oneof renamed", "oneof payer", "oneof buyer"),
    edit("message deleted", "message OrderCancelled { string order_id = 1; }\n", ""),
    edit(
        "nested message and its field deleted, reserved",
        "  message Audit { string by = 1; }\n  Audit audit = 14;\n",
        '  reserved 14;\n  reserved "audit";\n',
    ),
    edit(
        "nested enum deleted",
        "  enum Source { SOURCE_UNSPECIFIED = 0; SOURCE_APP = 1; }\n  Source source = 15;\n",
        '  reserved 15;\n  reserved "source";\n',
    ),
    edit("enum deleted", "enum Carrier { CARRIER_UNSPECIFIED = 0; CARRIER_POST = 1; }\n", ""),
    edit("enum value deleted", "  CHANNEL_STORE = 2;\n", ""),
    edit("enum value deleted, number reserved", "  CHANNEL_STORE = 2;\n", "  reserved 2;\n"),
    edit(
        "enum value deleted, number and name reserved",
        "  CHANNEL_STORE = 2;\n",
        '  reserved 2;\n  reserved "CHANNEL_STORE";\n',
    ),
    edit("enum value renamed", "CHANNEL_STORE = 2", "CHANNEL_SHOP = 2"),
    edit(
        "enum value alias added",
        "  CHANNEL_UNSPECIFIED = 0;\n",
        "  option allow_alias = true;\n  CHANNEL_UNSPECIFIED = 0;\n  CHANNEL_NONE = 0;\n",
    ),
    edit("enum value added", "  CHANNEL_STORE = 2;\n", "  CHANNEL_STORE = 2;\n  CHANNEL_PHONE = 3;\n"),
    edit("message reserved number dropped", "  reserved 20;\n", ""),
    edit("message reserved name dropped", '  reserved "legacy";\n', ""),
    edit("message reserved range widened", "  reserved 20;\n", "  reserved 20 to 25;\n"),
    edit("enum reserved number dropped", "  reserved 9;\n", ""),
    edit("enum reserved name dropped", '  reserved "CHANNEL_FAX";\n', ""),
    edit("package changed", "package shop.orders.v1;", "package shop.orders.v2;"),
    edit("go_package changed", 'ordersv1";', 'orders";'),
    edit(
        "java_package added",
        "package shop.orders.v1;\n",
        'package shop.orders.v1;\noption java_package = "com.shop.orders.v1";\n',
    ),
    edit("deprecated option added", "string coupon = 3", "string coupon = 3 [deprecated = true]"),
    edit("jstype changed", "int64 total_cents = 2", "int64 total_cents = 2 [jstype = JS_STRING]"),
    ChangePair(
        "message moved to another file of its package", {ORDERS: BASE}, {ORDERS: MOVED, SHIPPING: SHIPPING_FILE}
    ),
    ChangePair("file added", {ORDERS: BASE}, {ORDERS: BASE, LEGACY: LEGACY_BASE}),
    ChangePair("file deleted", {ORDERS: BASE, LEGACY: LEGACY_BASE}, {ORDERS: BASE}),
    ChangePair("file renamed", {ORDERS: BASE}, {"shop/orders/v1/order_events.proto": BASE}),
    edit("rpc deleted", "  rpc GetOrder(OrderShipped) returns (OrderCreated);\n", ""),
    edit("rpc request type changed", "rpc GetOrder(OrderShipped)", "rpc GetOrder(OrderCancelled)"),
    edit("rpc made server streaming", "returns (OrderCreated);", "returns (stream OrderCreated);"),
    edit("rpc made client streaming", "rpc ListOrders(OrderShipped)", "rpc ListOrders(stream OrderShipped)"),
    edit(
        "rpc idempotency set",
        "returns (OrderCreated);",
        "returns (OrderCreated) { option idempotency_level = NO_SIDE_EFFECTS; }",
    ),
    edit(
        "service deleted",
        "service OrderQueries {\n  rpc GetOrder(OrderShipped) returns (OrderCreated);\n"
        "  rpc ListOrders(OrderShipped) returns (stream OrderCreated);\n}\n",
        "",
    ),
    edit("rpc response type changed", "returns (OrderCreated);", "returns (OrderShipped);"),
    edit("message field to bytes", "Audit audit = 14", "bytes audit = 14"),
    edit("explicit presence field moved into a oneof", "  optional string note = 9;\n", "")._replace(
        new={
            ORDERS: BASE.replace("  optional string note = 9;\n", "").replace(
                "string company_id = 6; }", "string company_id = 6; string note = 9; }"
            )
        }
    ),
    ChangePair(
        "the only message of a package deleted",
        {ORDERS: BASE, MISC: MISC_HEADER + "message NoteAdded {}\n"},
        {ORDERS: BASE, MISC: MISC_HEADER + "enum Kind { KIND_UNSPECIFIED = 0; }\n"},
    ),
    ChangePair(
        "enum replaced by a same-named enum of another package with more values",
        {ORDERS: BASE, "shop/common/v1/common.proto": COMMON},
        {
            ORDERS: BASE.replace(
                "package shop.orders.v1;\n", 'package shop.orders.v1;\nimport "shop/common/v1/common.proto";\n'
            ).replace("Channel channel = 4", "shop.common.v1.Channel channel = 4"),
            "shop/common/v1/common.proto": COMMON,
        },
    ),
    legacy("required field added", "  optional string memo = 3;\n", "  required string memo = 3;\n"),
    legacy("required field made optional", "required string payment_id = 1", "optional string payment_id = 1"),
    legacy("default changed", "[default = 5]", "[default = 6]"),
    legacy("default removed", " [default = 5]", ""),
    legacy("double default written another way", "[default = 1.5]", "[default = 15e-1]"),
    legacy("extension range removed", "  extensions 100 to 199;\n", "  extensions 100 to 149;\n"),
    legacy("extension deleted", "extend PaymentCaptured { optional string note = 100; }\n", ""),
    legacy("extension renamed", "optional string note = 100;", "optional string remark = 100;"),
    legacy("ctype set", "optional string memo = 3", "optional string memo = 3 [ctype = CORD]"),
    legacy(
        "java_string_check_utf8 set",
        "package shop.legacy.v1;\n",
        "package shop.legacy.v1;\noption java_string_check_utf8 = true;\n",
    ),
    ChangePair(
        "proto2 to proto3",
        {
            LEGACY: 'syntax = "proto2";\npackage shop.legacy.v1;\nenum Kind { KIND_UNSPECIFIED = 0; }\n'
            "message NoteAdded { optional string text = 1; optional Kind kind = 2; }\n"
        },
        {
            LEGACY: 'syntax = "proto3";\npackage shop.legacy.v1;\nenum Kind { KIND_UNSPECIFIED = 0; }\n'
            "message NoteAdded { optional string text = 1; optional Kind kind = 2; }\n"
        },
    ),
    edition(
        "legacy required field deleted",
        "  int32 points = 3;\n",
        "  int32 points = 3;\n  reserved 4;\n",
    )._replace(
        old={
            EDITION: EDITION_BASE.replace(
                "int32 points = 3;", "int32 points = 3;\n  string code = 4 [features.field_presence = LEGACY_REQUIRED];"
            )
        }
    ),
    ChangePair(
        "proto2 required field moved to editions",
        {A: 'syntax = "proto2";\npackage a.v1;\nmessage OrderPlaced { required string order_id = 1; }\n'},
        {
            A: 'edition = "2023";\npackage a.v1;\n'
            "message OrderPlaced { string order_id = 1 [features.field_presence = LEGACY_REQUIRED]; }\n"
        },
    ),
    ChangePair(
        "edition 2023 to 2024",
        {A: 'edition = "2023";\npackage a.v1;\nmessage NoteAdded { string text = 1; }\n'},
        {A: 'edition = "2024";\npackage a.v1;\nmessage NoteAdded { string text = 1; }\n'},
    ),
    ChangePair(
        "proto3 to edition 2024",
        {A: 'syntax = "proto3";\npackage a.v1;\nmessage NoteAdded { string text = 1; }\n'},
        {
            A: 'edition = "2024";\npackage a.v1;\n'
            "message NoteAdded { string text = 1 [features.field_presence = IMPLICIT]; }\n"
        },
    ),
    ChangePair(
        "ctype CORD to the pb.cpp string_type feature",
        {A: 'syntax = "proto2";\npackage a.v1;\nmessage NoteAdded { optional string text = 1 [ctype = CORD]; }\n'},
        {
            A: 'edition = "2024";\npackage a.v1;\nimport "google/protobuf/cpp_features.proto";\n'
            "message NoteAdded { string text = 1 [features.(pb.cpp).string_type = CORD]; }\n"
        },
    ),
    ChangePair(
        "pb.java utf8_validation set",
        {A: JAVA_FEATURES_HEADER + "message NoteAdded { string text = 1 [features.utf8_validation = NONE]; }\n"},
        {
            A: JAVA_FEATURES_HEADER + "message NoteAdded { string text = 1 "
            "[features.utf8_validation = NONE, features.(pb.java).utf8_validation = VERIFY]; }\n"
        },
    ),
    ChangePair(
        "java_string_check_utf8 to the pb.java feature",
        {
            A: 'syntax = "proto2";\npackage a.v1;\noption java_string_check_utf8 = true;\n'
            "message NoteAdded { optional string text = 1; }\n"
        },
        {
            A: JAVA_FEATURES_HEADER + "option features.utf8_validation = NONE;\n"
            "message NoteAdded { string text = 1 [features.(pb.java).utf8_validation = VERIFY]; }\n"
        },
    ),
    ChangePair(
        "Timestamp import dropped for int64 milliseconds",
        {
            A: 'syntax = "proto3";\npackage a.v1;\nimport "google/protobuf/timestamp.proto";\n'
            "message NoteAdded { google.protobuf.Timestamp at = 1; }\n"
        },
        {A: 'syntax = "proto3";\npackage a.v1;\nmessage NoteAdded { reserved 1; reserved "at"; int64 at_ms = 2; }\n'},
    ),
    edition("enum made closed", "enum Tier {", "enum Tier {\n  option features.enum_type = CLOSED;"),
    edition(
        "message JSON format limited",
        "message MemberJoined {",
        "message MemberJoined {\n  option features.json_format = LEGACY_BEST_EFFORT;",
    ),
    edition(
        "string UTF-8 check turned off",
        "string member_id = 1",
        "string member_id = 1 [features.utf8_validation = NONE]",
    ),
    edition(
        "field presence made implicit", "int32 points = 3", "int32 points = 3 [features.field_presence = IMPLICIT]"
    ),
    edition(
        "message field made delimited", "  int32 points = 3;\n", "  int32 points = 3;\n  MemberJoined referrer = 4;\n"
    )._replace(
        old={
            EDITION: EDITION_BASE.replace(
                "  int32 points = 3;\n", "  int32 points = 3;\n  MemberJoined referrer = 4;\n"
            )
        },
        new={
            EDITION: EDITION_BASE.replace(
                "  int32 points = 3;\n",
                "  int32 points = 3;\n  MemberJoined referrer = 4 [features.message_encoding = DELIMITED];\n",
            )
        },
    ),
]


def write_tree(root: Path, files: dict[str, str], config: str) -> Path:
    root.mkdir(parents=True)
    (root / "buf.yaml").write_text(config)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def buf_rules(old: Path, new: Path) -> list[str]:
    """buf's verdict: the rule ids it reports for ``new`` (whose buf.yaml names the level) against ``old``."""
    done = subprocess.run(
        # Imports (the well-known types) are not the project's contracts: eventwire never compares them.
        [str(BUF), "breaking", str(new), "--against", str(old), "--exclude-imports", "--error-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 100), done.stderr
    return sorted({json.loads(line)["type"] for line in done.stdout.splitlines()})


def test_corpus_is_large_enough_and_well_formed() -> None:
    assert len(CORPUS) >= 40
    assert len({pair.name for pair in CORPUS}) == len(CORPUS)
    assert all(pair.old != pair.new for pair in CORPUS if pair.name != "identical")


def test_eventwire_and_buf_agree_on_every_change_at_every_level(tmp_path: Path) -> None:
    assert BUF.exists(), "the buf binary comes from the buf-bin wheel in the dev extra"
    agreement: Counter[str] = Counter()
    breaking: Counter[str] = Counter()
    disagreements = []
    ours: dict[tuple[int, str], list[str]] = {}
    buf_jobs: dict[tuple[int, str], tuple[Path, Path]] = {}
    for index, pair in enumerate(CORPUS):
        old = write_tree(tmp_path / f"{index}" / "old", pair.old, "version: v2\n")
        old_set = descriptor_set(old, with_imports=True)
        new_set = descriptor_set(
            write_tree(tmp_path / f"{index}" / "new", pair.new, "version: v2\n"), with_imports=True
        )
        for level in LEVELS:
            ours[index, level] = sorted({c.rule for c in check(old_set, new_set, level)})
            # buf reads its level from the new tree's buf.yaml: one tree per level, so they can run at once.
            new = write_tree(tmp_path / f"{index}" / level, pair.new, f"version: v2\nbreaking:\n  use: [{level}]\n")
            buf_jobs[index, level] = (old, new)
    with ThreadPoolExecutor(max_workers=4) as pool:  # one buf process per job: run a few at once
        theirs = dict(zip(buf_jobs, pool.map(lambda job: buf_rules(*job), buf_jobs.values()), strict=True))
    for (index, at), rules in theirs.items():
        breaking[at] += bool(rules)
        if ours[index, at] == rules:
            agreement[at] += 1
        else:
            disagreements.append(f"{CORPUS[index].name} @ {at}: eventwire {ours[index, at]} buf {rules}")
    summary = ", ".join(f"{level} {agreement[level]}/{len(CORPUS)} ({breaking[level]} breaking)" for level in LEVELS)
    print(f"\nagreement with buf: {summary}")
    assert not disagreements, "\n".join(disagreements)
    # A corpus where nothing breaks would agree trivially.
    assert all(breaking[level] >= 15 for level in LEVELS), summary


@pytest.mark.parametrize("level", LEVELS)
def test_the_identical_pair_is_clean_at_every_level(tmp_path: Path, level: str) -> None:
    files = write_tree(tmp_path / "same", {ORDERS: BASE, LEGACY: LEGACY_BASE, EDITION: EDITION_BASE}, "version: v2\n")
    contracts = descriptor_set(files, with_imports=True)
    assert check(contracts, contracts, level) == []  # type: ignore[arg-type]
