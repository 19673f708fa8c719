"""``.proto`` text rebuilt from descriptors: protoc must compile it back into the same descriptors."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from eventwire import ContractError
from eventwire.contracts._lint import descriptor_set
from eventwire.contracts._proto_source import file_descriptor_proto, render_file

from .events import OrderCreated, StockReserved

MONEY = """
syntax = "proto3";

package shop.catalog.v1;

message Money {
  int64 units = 1;
  string currency = 2;
}
"""

CATALOG = r"""
syntax = "proto3";

package shop.catalog.v1;

import "google/protobuf/descriptor.proto";
import public "shop/catalog/v1/money.proto";

option java_package = "com.shop.catalog.v1";
option optimize_for = SPEED;

extend google.protobuf.FieldOptions {
  string sensitivity = 50001;
}

enum Currency {
  option allow_alias = true;
  CURRENCY_UNSPECIFIED = 0;
  CURRENCY_EUR = 1;
  CURRENCY_EURO = 1 [deprecated = true];
  reserved 5, 10 to 12, 100 to max;
  reserved "CURRENCY_GBP";
}

message ProductListed {
  option deprecated = true;
  message Variant {
    string sku = 1;
    map<string, int32> stock_by_warehouse = 2;
  }
  string product_id = 1 [json_name = "id"];
  optional string note = 2;
  repeated Variant variants = 3;
  map<string, .shop.catalog.v1.Tag> tags = 4;
  message Tag {
    string label = 1;
  }
  oneof price {
    int64 cents = 5;
    Money money = 6;
  }
  Currency currency = 7;
  bytes blob = 8 [deprecated = true];
  Tag nested_tag = 9;
  repeated int32 codes = 10 [packed = false];
  reserved 20, 30 to 40, 1000 to max;
  reserved "old_name", "older_name";
  enum Kind {
    KIND_UNSPECIFIED = 0;
    KIND_BOOK = 1;
  }
  Kind kind = 11;
  google.protobuf.FieldDescriptorProto other = 12;
  optional Kind maybe_kind = 13;
  oneof choice {
    string a = 14;
    string b = 15;
  }
  map<int64, Variant> variants_by_id = 16;
  string label_text = 17 [json_name = "café \"label\""];
}

message Tag {
  string value = 1;
}

service Catalog {
  rpc Describe(ProductListed) returns (stream Tag);
  rpc Watch(stream Tag) returns (Tag) {
    option deprecated = true;
  }
}
"""

LEGACY = r"""
syntax = "proto2";

package legacy.v1;

message OrderShipped {
  required string order_id = 1;
  optional int32 boxes = 2 [default = 1];
  optional string carrier = 3 [default = "post \"fast\"\n"];
  optional bytes marker = 4 [default = "\001\377"];
  optional double weight = 5 [default = inf];
  optional Speed speed = 6 [default = SPEED_FAST];
  repeated int32 parcels = 7 [packed = true];
  extensions 100 to 199, 500 to max;
  enum Speed {
    SPEED_SLOW = 1;
    SPEED_FAST = 2;
  }
  oneof destination {
    string address = 8;
    string locker = 9;
  }
}

extend OrderShipped {
  optional string note = 100;
}
"""


MEMBERS = """
edition = "2023";

package shop.members.v1;

option features.field_presence = IMPLICIT;

enum Tier {
  option features.enum_type = CLOSED;
  TIER_GOLD = 1;
  TIER_SILVER = 2;
  reserved 9;
  reserved TIER_BRONZE;
}

message MemberJoined {
  option features.json_format = LEGACY_BEST_EFFORT;
  string member_id = 1 [features.field_presence = LEGACY_REQUIRED];
  Tier tier = 2 [features.field_presence = EXPLICIT, default = TIER_SILVER];
  int32 points = 3;
  repeated int32 codes = 4 [features.repeated_field_encoding = EXPANDED];
  message Referral {
    string code = 1;
  }
  Referral referral = 5 [features.message_encoding = DELIMITED];
  string note = 6 [features.utf8_validation = NONE];
  map<string, int32> counts = 7;
  oneof contact {
    string email = 8;
    string phone = 9;
  }
  reserved 10 to 12;
  reserved old_name;
}
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _compiled(root: Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = {}
    for file in descriptor_set(root).file:
        file.ClearField("source_code_info")
        files[file.name] = file
    return files


def test_rendered_files_compile_back_into_the_same_descriptors(tmp_path: Path) -> None:
    sources = {
        "shop/catalog/v1/money.proto": MONEY,
        "shop/catalog/v1/catalog.proto": CATALOG,
        "legacy/v1/shipping.proto": LEGACY,
        "shop/members/v1/members.proto": MEMBERS,
    }
    original = _compiled(_write(tmp_path / "original", sources))
    rendered = {name: render_file(file) for name, file in original.items()}
    assert _compiled(_write(tmp_path / "rendered", rendered)) == original


def test_a_reference_that_a_nested_type_would_shadow_stays_fully_qualified(tmp_path: Path) -> None:
    original = _compiled(_write(tmp_path, {"shop/catalog/v1/money.proto": MONEY, "shop/catalog/v1/c.proto": CATALOG}))
    text = render_file(original["shop/catalog/v1/c.proto"])
    assert "map<string, .shop.catalog.v1.Tag> tags = 4;" in text
    assert "Tag nested_tag = 9;" in text
    assert "repeated Variant variants = 3;" in text
    assert "rpc Describe(ProductListed) returns (stream Tag);" in text


def test_a_generated_module_renders_its_file() -> None:
    text = render_file(file_descriptor_proto(OrderCreated))
    assert text.startswith('syntax = "proto3";\n\npackage shop.orders.v1;\n')
    assert "message OrderCreated {\n  string order_id = 1;" in text
    assert "  repeated LineItem items = 3;\n" in text
    assert "message StockReserved {" in render_file(file_descriptor_proto(StockReserved))


def test_language_specific_features_are_refused(tmp_path: Path) -> None:
    text = 'edition = "2023";\npackage a.v1;\nimport "google/protobuf/cpp_features.proto";\n'
    text += "message NoteAdded { string text = 1 [features.(pb.cpp).string_type = CORD]; }\n"
    file = _compiled(_write(tmp_path, {"a/v1/a.proto": text}))["a/v1/a.proto"]
    with pytest.raises(ContractError, match=r"pb\.cpp"):
        render_file(file)
