"""``eventwire schema build|lint`` on .proto files written by the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventwire.contracts._lint import lint

ROOT = Path(__file__).parent.parent

BAD = """syntax = "proto3";

package shop.orders;

import "google/protobuf/timestamp.proto";

message OrderEvent {
  string orderId = 1;
}

message CreateOrder {
  string order_id = 1;
  google.protobuf.Timestamp created_at = 2;
}

message Address {
  string street = 1;
}

message OrderShipped {
  string order_id = 1;
  Address address = 2;
}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return folder


def eventwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventwire", "schema", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lint_reports_each_rule_at_its_place(tmp_path: Path) -> None:
    findings = [str(f) for f in lint(write(tmp_path, "shop/orders/orders.proto", BAD))]
    assert findings == [
        "shop/orders/orders.proto:3:1 EW001-package-version error: package 'shop.orders' must end in a version "
        "component such as 'v1' or 'v2beta1'",
        "shop/orders/orders.proto:7:1 EW003-event-suffix error: drop the 'Event' suffix; name what happened, "
        "e.g. OrderCreated",
        "shop/orders/orders.proto:8:3 EW005-field-snake-case error: OrderEvent.orderId is not lower_snake_case",
        "shop/orders/orders.proto:11:1 EW004-event-past-tense error: 'CreateOrder' has no past-tense verb after "
        "its noun; events state a fact, e.g. OrderCreated rather than CreateOrder",
        "shop/orders/orders.proto:13:3 EW006-timestamp-type warning: CreateOrder.created_at: use int64 Unix "
        "milliseconds (e.g. created_at_ms), which every language decodes without well-known types",
    ]  # Address is a value type (used by OrderShipped), not an event: no naming rule applies to it


def test_lint_cli_exits_non_zero_on_errors_and_zero_on_the_demo_contracts(tmp_path: Path) -> None:
    bad = eventwire("lint", str(write(tmp_path, "shop/orders/orders.proto", BAD)))
    assert bad.returncode == 1
    assert "4 error(s), 1 warning(s)" in bad.stdout
    good = eventwire("lint", str(ROOT / "eventwire" / "demo" / "proto"))
    summary = f"3 file(s) in {ROOT / 'eventwire' / 'demo' / 'proto'}: no errors, 0 warning(s)\n"
    assert (good.returncode, good.stdout) == (0, summary)


def test_warnings_alone_pass(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        "a/v1/a.proto",
        'syntax = "proto3";\npackage a.v1;\n'
        'import "google/protobuf/timestamp.proto";\n'
        "message ThingHappened { google.protobuf.Timestamp at = 1; }\n",
    )
    result = eventwire("lint", str(source))
    assert result.returncode == 0
    assert "EW006-timestamp-type warning" in result.stdout


def test_build_generates_importable_modules(tmp_path: Path) -> None:
    result = eventwire("build", str(ROOT / "eventwire" / "demo" / "proto"), "--out", str(tmp_path / "gen"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gen" / "shop" / "orders" / "v1" / "orders_pb2.pyi").exists()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "from shop.orders.v1 import orders_pb2; print(orders_pb2.OrderCreated.DESCRIPTOR.full_name)",
        ],
        cwd=tmp_path / "gen",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.stdout.strip() == "shop.orders.v1.OrderCreated", check.stderr


@pytest.mark.parametrize("command", ["lint", "build"])
def test_a_syntax_error_is_reported(tmp_path: Path, command: str) -> None:
    source = write(tmp_path, "x/v1/x.proto", 'syntax = "proto3";\npackage x.v1;\nmessage Broken {\n')
    args = [command, str(source)] + (["--out", str(tmp_path / "out")] if command == "build" else [])
    result = eventwire(*args)
    assert result.returncode == 1
    assert "protoc failed" in result.stderr


BASE = """syntax = "proto3";
package shop.orders.v1;
enum Channel { CHANNEL_UNSPECIFIED = 0; CHANNEL_WEB = 1; CHANNEL_STORE = 2; }
message OrderCreated {
  string order_id = 1;
  int64 total_cents = 2;
  string coupon = 3;
  Channel channel = 4;
  oneof payer { string customer_id = 5; string company_id = 6; }
}
message OrderShipped { string order_id = 1; }
"""


def changed(old: str, new: str) -> str:
    return BASE.replace(old, new)


RESERVED = '  reserved 3;\n  reserved "coupon";\n'


@pytest.mark.parametrize(
    ("new", "level", "rules"),
    [
        (BASE, "WIRE_JSON", []),
        (changed("  string coupon = 3;\n", ""), "WIRE", ["FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"]),
        (changed("  string coupon = 3;\n", "  reserved 3;\n"), "WIRE", []),
        (changed("  string coupon = 3;\n", "  reserved 3;\n"), "WIRE_JSON", ["FIELD_NO_DELETE_UNLESS_NAME_RESERVED"]),
        (changed("  string coupon = 3;\n", RESERVED), "WIRE_JSON", []),
        (changed("  string coupon = 3;\n", RESERVED), "FILE", ["FIELD_NO_DELETE"]),
        (changed("int64 total_cents = 2", "int32 total_cents = 2"), "WIRE", []),
        (changed("int64 total_cents = 2", "int32 total_cents = 2"), "WIRE_JSON", ["FIELD_WIRE_JSON_COMPATIBLE_TYPE"]),
        (changed("int64 total_cents = 2", "string total_cents = 2"), "WIRE", ["FIELD_WIRE_COMPATIBLE_TYPE"]),
        (changed("string coupon = 3", "repeated string coupon = 3"), "WIRE", ["FIELD_WIRE_COMPATIBLE_CARDINALITY"]),
        (changed("string coupon = 3", "string voucher = 3"), "WIRE", []),
        (changed("string coupon = 3", "string voucher = 3"), "WIRE_JSON", ["FIELD_SAME_JSON_NAME", "FIELD_SAME_NAME"]),
        (changed("string company_id = 6; }", "}\n  string company_id = 6;"), "WIRE", ["FIELD_SAME_ONEOF"]),
        (changed("message OrderShipped { string order_id = 1; }\n", ""), "WIRE", []),
        (changed("message OrderShipped { string order_id = 1; }\n", ""), "FILE", ["MESSAGE_NO_DELETE"]),
        (changed("message OrderShipped { string order_id = 1; }\n", ""), "PACKAGE", ["PACKAGE_MESSAGE_NO_DELETE"]),
        (changed(" CHANNEL_STORE = 2;", ""), "WIRE", ["ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED"]),
        (changed(" CHANNEL_STORE = 2;", " reserved 2;"), "WIRE", []),
        (changed("package shop.orders.v1;", "package shop.orders.v2;"), "WIRE", ["FILE_SAME_PACKAGE"]),
    ],
)
def test_breaking_changes_against_a_lock(tmp_path: Path, new: str, level: str, rules: list[str]) -> None:
    lock_file = tmp_path / "contracts.lock"
    old_source = write(tmp_path / "old", "shop/orders/v1/orders.proto", BASE)
    assert eventwire("lock", str(old_source), "--out", str(lock_file)).returncode == 0
    new_source = write(tmp_path / "new", "shop/orders/v1/orders.proto", new)
    result = eventwire("check", str(new_source), "--against", str(lock_file), "--level", level)
    found = sorted(line.split()[1] for line in result.stdout.splitlines() if line.startswith("shop/"))
    assert found == rules, result.stdout
    assert result.returncode == (1 if rules else 0)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True, capture_output=True
    )


def test_check_against_a_git_revision(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    source = write(repo / "contracts", "shop/orders/v1/orders.proto", BASE)
    git(repo, "init", "--quiet")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "contracts v1")
    write(source, "shop/orders/v1/orders.proto", changed("  string coupon = 3;\n", ""))

    result = eventwire("check", str(source), "--against", "HEAD")
    assert result.returncode == 1
    assert "shop/orders/v1/orders.proto: FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED" in result.stdout
    assert "FIELD_NO_DELETE_UNLESS_NAME_RESERVED" in result.stdout  # WIRE_JSON is the default level

    git(repo, "commit", "--quiet", "-am", "coupon removed")
    assert eventwire("check", str(source), "--against", "HEAD").returncode == 0
    assert eventwire("check", str(source), "--against", "HEAD~1", "--level", "WIRE").returncode == 1

    unknown = eventwire("check", str(source), "--against", "v9")
    assert unknown.stderr.startswith("error: 'v9' is neither a lock file nor a commit of the git repository")
    later = write(repo / "later", "shop/orders/v1/orders.proto", BASE)
    missing = eventwire("check", str(later), "--against", "HEAD")  # the folder did not exist then
    assert (missing.returncode, missing.stderr.startswith("error: git archive")) == (1, True), missing.stderr


def test_check_reports_a_bad_baseline(tmp_path: Path) -> None:
    source = write(tmp_path / "new", "shop/orders/v1/orders.proto", BASE)
    not_a_lock = tmp_path / "not.lock"
    not_a_lock.write_bytes(b"\xff\xff garbage")
    assert "is not a lock file" in eventwire("check", str(source), "--against", str(not_a_lock)).stderr
    empty = tmp_path / "empty.lock"
    empty.write_bytes(b"")
    assert "holds no contracts" in eventwire("check", str(source), "--against", str(empty)).stderr
    missing = eventwire("check", str(source), "--against", str(tmp_path / "contracts.lock"))
    assert (missing.returncode, missing.stderr.strip()) == (1, f"error: no such lock file: {tmp_path}/contracts.lock")
    unknown = eventwire("check", str(source), "--against", "no-such-revision")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: git")  # tmp_path is not in a git repository
    unwritable = eventwire("lock", str(source), "--out", str(tmp_path / "no" / "such" / "dir.lock"))
    assert (unwritable.returncode, unwritable.stderr.startswith("error: cannot write")) == (1, True)
    bad_level = eventwire("check", str(source), "--against", str(not_a_lock), "--level", "BYTES")
    assert bad_level.returncode == 2


def test_the_demo_contracts_keep_their_lock_at_the_strictest_level() -> None:
    demo = ROOT / "eventwire" / "demo"
    result = eventwire("check", str(demo / "proto"), "--against", str(demo / "contracts.lock"), "--level", "FILE")
    summary = f"no breaking changes against {demo / 'contracts.lock'} at level FILE\n"
    assert (result.returncode, result.stdout) == (0, summary), result.stdout


def test_check_compares_like_buf_with_exclude_imports(tmp_path: Path) -> None:
    """An import that is gone is not a change (buf without --exclude-imports says FILE_NO_DELETE for it)."""
    before = write(
        tmp_path / "before",
        "shop/v1/a.proto",
        'syntax = "proto3";\npackage shop.v1;\nimport "google/protobuf/timestamp.proto";\n'
        "message OrderCreated {\n  string order_id = 1;\n  google.protobuf.Timestamp at = 2;\n}\n",
    )
    after = write(
        tmp_path / "after",
        "shop/v1/a.proto",
        'syntax = "proto3";\npackage shop.v1;\n'
        'message OrderCreated {\n  reserved 2;\n  reserved "at";\n  string order_id = 1;\n}\n',
    )
    assert eventwire("lock", str(before), "--out", str(tmp_path / "before.lock")).returncode == 0
    result = eventwire("check", str(after), "--against", str(tmp_path / "before.lock"), "--level", "FILE")
    assert (result.returncode, result.stdout) == (
        1,
        "shop/v1/a.proto: FIELD_NO_DELETE field shop.v1.OrderCreated.at (2) was deleted\n"
        "1 breaking change(s) at level FILE\n",
    )
