// A Node.js inventory service among eventwire services (docs/interop.md).
//
// It consumes shop.orders.v1.OrderCreated from the ORDERS stream on a durable of its own and, for
// each, publishes shop.inventory.v1.StockReserved on inventory.reserved, where an eventwire handler
// takes it. The CloudEvents attributes travel as NATS headers, percent-encoded, as the CloudEvents
// NATS binding says; the JavaScript SDK has no NATS binding, so the mapping is written here.
//
//   NATS_URL   server (default nats://127.0.0.1:4222)
//   DURABLE    this service's durable on ORDERS (default node-inventory)
//   COUNT      exit after handling this many orders (default: run until SIGINT/SIGTERM)

import { fileURLToPath } from "node:url";
import path from "node:path";

import { connect, headers } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { CloudEvent } from "cloudevents";
import protobuf from "protobufjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.join(here, "..", "..", "eventwire", "demo", "proto");
const url = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const durable = process.env.DURABLE ?? "node-inventory";
const count = process.env.COUNT ? Number(process.env.COUNT) : Infinity;

// Percent-encode what a header may not carry as is: space, '"', '%', controls and non-ASCII (UTF-8 bytes).
const encode = (value) =>
  Array.from(new TextEncoder().encode(String(value)), (b) =>
    b <= 0x20 || b === 0x22 || b === 0x25 || b >= 0x7f
      ? "%" + b.toString(16).toUpperCase().padStart(2, "0")
      : String.fromCharCode(b),
  ).join("");
const decode = (value) => (value && value.includes("%") ? decodeURIComponent(value) : value);

const ATTRIBUTES = ["specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema"];

// The event's attributes as headers, ce-<name> each; extensions the same way.
function toHeaders(event, extensions, msgId) {
  const h = headers();
  for (const name of [...ATTRIBUTES, ...extensions]) {
    if (event[name] !== undefined) h.set(`ce-${name}`, encode(event[name]));
  }
  h.set("Nats-Msg-Id", msgId);
  return h;
}

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => path.join(protoRoot, target);
await root.load(["shop/orders/v1/orders.proto", "shop/inventory/v1/inventory.proto"], { keepCase: true });
const OrderCreated = root.lookupType("shop.orders.v1.OrderCreated");
const StockReserved = root.lookupType("shop.inventory.v1.StockReserved");

const nc = await connect({ servers: url, name: "node-inventory" });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
await jsm.consumers.add("ORDERS", {
  durable_name: durable,
  ack_policy: AckPolicy.Explicit,
  filter_subject: "orders.created",
});
const consumer = await js.consumers.get("ORDERS", durable);
const messages = await consumer.consume();
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => messages.stop());
console.log(`node-inventory: consuming ORDERS as ${durable}`);

let handled = 0;
for await (const m of messages) {
  const type = decode(m.headers?.get("ce-type"));
  const contentType = decode(m.headers?.get("ce-datacontenttype")) || "application/protobuf";
  if (type !== "shop.orders.v1.OrderCreated" || !contentType.endsWith("protobuf")) {
    m.term(); // not an event this service can ever handle
    continue;
  }
  const order = OrderCreated.decode(m.data);
  const reserved = StockReserved.encode(
    StockReserved.create({ order_id: order.order_id, reservation_id: `node-${order.order_id}`, reserved_at_ms: Date.now() }),
  ).finish();
  const event = new CloudEvent({
    type: "shop.inventory.v1.StockReserved",
    source: "/services/node-inventory",
    subject: order.order_id,
    datacontenttype: "application/protobuf",
    correlationid: decode(m.headers?.get("ce-correlationid")) || decode(m.headers?.get("ce-id")),
    causationid: decode(m.headers?.get("ce-id")),
    data_base64: Buffer.from(reserved).toString("base64"),
  });
  event.validate();
  await js.publish("inventory.reserved", reserved, {
    headers: toHeaders(event, ["correlationid", "causationid"], `node-reserved-${order.order_id}`),
  });
  m.ack();
  handled += 1;
  if (handled >= count) break;
}
await nc.drain();
console.log(`node-inventory: handled ${handled} order(s)`);
