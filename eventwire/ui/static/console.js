"use strict";
// The eventwire console: four pages over the JSON API of `eventwire ui`. Text from the server is always set as
// text, never as markup; the one exception is the topology's SVG, which the server renders with escaped labels.

const page = document.getElementById("page");
let refreshTimer = null;
let canChange = false;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "onclick" || name === "onsubmit" || name === "onchange") node[name] = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function post(path) {
  return api(path, { method: "POST", headers: { "X-Eventwire-Console": "1" } });
}

function show(...nodes) {
  page.replaceChildren(...nodes.flat().filter((node) => node !== null && node !== undefined));
}

function failure(error) {
  return el("p", { class: "error", role: "alert" }, String(error.message || error));
}

function every(seconds, draw) {
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => draw().catch((error) => console.warn(error)), seconds * 1000);
}

function hashQuery() {
  const [, query = ""] = location.hash.split("?");
  return new URLSearchParams(query);
}

// -- topology ---------------------------------------------------------------------------------------------------

async function topologyPage() {
  const draw = async () => {
    const view = await api("/api/topology");
    const graph = el("div", { class: "graph", id: "topology-graph" });
    graph.innerHTML = view.svg;
    const rows = view.reads.map((read) =>
      el("tr", { "data-durable": read.durable },
        el("td", {}, read.stream), el("td", {}, read.durable), el("td", {}, read.service || "(not listed)"),
        el("td", { class: "number" }, read.on_server ? read.pending : "-"),
        el("td", { class: "number" }, read.on_server ? read.ack_pending : "-")));
    show(
      el("h1", {}, `Topology: ${view.services.length} services, ${view.events.length} events`),
      graph,
      el("table", {}, el("tr", {}, ["stream", "durable", "service", "pending", "unacked"].map((h) => el("th", {}, h))), rows),
      view.warnings.map((warning) => el("p", { class: "error" }, warning)),
    );
  };
  await draw();
  every(5, draw);
}

// -- streams and consumers ---------------------------------------------------------------------------------------

function chart(history) {
  const width = 240, height = 48, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const top = Math.max(1, ...history.map((p) => Math.max(p.pending, p.ack_pending)));
  const first = history.length ? history[0].at : 0;
  const span = Math.max(1, (history.length ? history[history.length - 1].at : 0) - first);
  for (const [key, css] of [["pending", "pending"], ["ack_pending", "ack-pending"]]) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", css);
    line.setAttribute("points", history.map((p) =>
      `${(((p.at - first) / span) * (width - 4) + 2).toFixed(1)},${(height - 3 - (p[key] / top) * (height - 6)).toFixed(1)}`).join(" "));
    svg.append(line);
  }
  const last = history[history.length - 1] || { pending: 0, ack_pending: 0 };
  svg.setAttribute("data-points", history.length);
  svg.setAttribute("data-pending", last.pending);
  svg.setAttribute("data-ack-pending", last.ack_pending);
  const title = document.createElementNS(ns, "title");
  title.textContent = `${history.length} samples over the last hour; now ${last.pending} pending, ${last.ack_pending} unacked`;
  svg.append(title);
  return svg;
}

async function streamsPage() {
  const draw = async () => {
    const view = await api("/api/streams");
    const sections = view.streams.map((stream) => el("section", { "data-stream": stream.name },
      el("h2", {}, stream.name),
      el("p", { class: `note level-${stream.level}` },
        `${stream.messages} messages, ${stream.bytes} bytes, sequences ${stream.first_seq}-${stream.last_seq}, `
        + `${stream.replicas} replica(s)${stream.leader ? `, leader ${stream.leader}` : ""}; `
        + `subjects ${stream.subjects.join(", ") || "-"}`, stream.problems.length ? ` (${stream.problems.join("; ")})` : ""),
      stream.consumers.length ? el("table", {},
        el("tr", {}, ["consumer", "pending", "unacked", "redelivered", "last delivery", "health", "last hour"].map((h) => el("th", {}, h))),
        stream.consumers.map((c) => el("tr", { class: `level-${c.level}`, "data-consumer": c.name },
          el("td", {}, c.name), el("td", { class: "number" }, c.pending), el("td", { class: "number" }, c.ack_pending),
          el("td", { class: "number" }, c.redelivered),
          el("td", {}, c.last_delivery_seconds === null ? "never" : `${c.last_delivery_seconds.toFixed(1)}s ago`),
          el("td", {}, c.level + (c.problems.length ? `: ${c.problems.join("; ")}` : "")),
          el("td", {}, chart(c.history))))) : el("p", { class: "note" }, "no consumers")));
    show(
      el("h1", {}, "Streams and consumers"),
      el("p", { class: "note" }, `Sampled every ${view.sample_interval}s while the console runs: `,
        el("span", { class: "legend-pending" }, "pending"), " and ", el("span", { class: "legend-ack" }, "unacked"), "."),
      view.error ? el("p", { class: "error" }, view.error) : null,
      sections,
    );
  };
  const view = await api("/api/streams");
  await draw();
  every(Math.max(1, view.sample_interval), draw);
}

// -- events ------------------------------------------------------------------------------------------------------

function payloadCell(item) {
  if (item.payload !== null) return el("pre", { class: "payload" }, JSON.stringify(item.payload));
  return el("div", {}, el("pre", { class: "payload hex" }, item.hex || ""), el("p", { class: "note" }, item.note || ""));
}

async function eventsPage() {
  const query = hashQuery();
  const streams = (await api("/api/streams")).streams.map((s) => s.name);
  const chosen = query.get("stream") || streams.find((name) => !name.startsWith("DLQ-")) || "";
  const field = (name, label, type = "text") =>
    el("label", {}, label, el("input", { name, type, value: query.get(name) || "" }));
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const [name, value] of data.entries()) if (value) next.set(name, value);
    location.hash = `#/events?${next}`;
  } },
    el("label", {}, "stream", el("select", { name: "stream" },
      streams.map((name) => el("option", { value: name, selected: name === chosen }, name)))),
    field("from_sequence", "from sequence", "number"),
    field("from_time", "from time (UTC)", "datetime-local"),
    field("subject", "subject"),
    field("type", "event type"),
    el("button", { type: "submit" }, "Show"));
  show(el("h1", {}, "Events"), form, el("p", { class: "note" }, "loading…"));
  if (!chosen) return show(el("h1", {}, "Events"), form, el("p", { class: "note" }, "no streams"));
  const params = new URLSearchParams();
  for (const name of ["from_sequence", "subject", "type"]) if (query.get(name)) params.set(name, query.get(name));
  if (query.get("from_time")) params.set("from_time", `${query.get("from_time")}Z`);
  try {
    const view = await api(`/api/streams/${encodeURIComponent(chosen)}/events?${params}`);
    const rows = view.events.map((event) => el("tr", { "data-sequence": event.sequence },
      el("td", { class: "number" }, event.sequence), el("td", {}, event.time || ""), el("td", {}, event.subject),
      el("td", {}, event.ce_type || "-"), el("td", {}, event.ce_id || "-"), el("td", {}, event.key || "-"),
      el("td", {}, payloadCell(event))));
    const more = view.next_sequence && view.events.length ? el("a", {
      href: `#/events?${new URLSearchParams({ ...Object.fromEntries(query), stream: chosen, from_sequence: view.next_sequence })}`,
    }, "next →") : null;
    show(el("h1", {}, `Events of ${chosen}`), form,
      el("table", { id: "events" }, el("tr", {}, ["seq", "time", "subject", "type", "id", "key", "payload"].map((h) => el("th", {}, h))), rows),
      view.events.length ? more : el("p", { class: "note" }, `no event matches (${view.scanned} read)`));
  } catch (error) {
    show(el("h1", {}, "Events"), form, failure(error));
  }
}

// -- dead letters ------------------------------------------------------------------------------------------------

function confirmDialog(title, body) {
  const dialog = document.getElementById("dialog");
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-body").replaceChildren(...body);
  dialog.hidden = false;
  return new Promise((resolve) => {
    const done = (answer) => { dialog.hidden = true; resolve(answer); };
    document.getElementById("dialog-confirm").onclick = () => done(true);
    document.getElementById("dialog-cancel").onclick = () => done(false);
  });
}

async function replayLetter(letter, status) {
  const path = `/api/dead-letters/${encodeURIComponent(letter.stream)}/${letter.sequence}`;
  const to = await api(`${path}/recipients`);
  const body = [
    el("p", {}, `The event goes back to ${to.subject} on stream ${to.stream}. These durables will receive it:`),
    to.durables.length ? el("ul", { id: "recipients" }, to.durables.map((d) => el("li", {}, d))) : el("p", { class: "error" }, "none: no durable takes this subject"),
    el("p", { class: "note" }, "It is then removed from the dead letters."),
  ];
  if (!await confirmDialog(`Replay ${letter.id}?`, body)) return;
  const done = await post(`${path}/replay`);
  status.replaceChildren(el("p", { role: "status" }, `Replayed ${done.replayed} as ${done.stream} #${done.sequence} to ${done.durables.join(", ") || "no durable"}.`));
}

async function purgeLetter(letter, status) {
  const path = `/api/dead-letters/${encodeURIComponent(letter.stream)}/${letter.sequence}`;
  if (!await confirmDialog(`Purge ${letter.id}?`, [el("p", {}, "The dead letter is deleted for good; nothing is delivered.")])) return;
  const done = await post(`${path}/purge`);
  status.replaceChildren(el("p", { role: "status" }, `Purged ${done.purged}.`));
}

async function deadLettersPage() {
  const query = hashQuery();
  const service = query.get("service") || "";
  const status = el("div", { id: "outcome" });
  const draw = async () => {
    const view = await api(`/api/dead-letters${service ? `?service=${encodeURIComponent(service)}` : ""}`);
    const act = (work, letter) => async () => {
      try { await work(letter, status); } catch (error) { status.replaceChildren(failure(error)); }
      await draw();
    };
    const rows = view.letters.map((letter) => el("tr", { "data-letter": letter.id },
      el("td", {}, letter.id), el("td", {}, letter.time || ""), el("td", {}, letter.service), el("td", {}, letter.handler),
      el("td", {}, letter.reason), el("td", {}, letter.error_type ? `${letter.error_type}: ${letter.error || ""}` : letter.error || ""),
      el("td", { class: "number" }, letter.delivery_count), el("td", {}, letter.ce_type || "-"), el("td", {}, payloadCell(letter)),
      el("td", {}, el("button", { type: "button", class: "replay", onclick: act(replayLetter, letter), disabled: !canChange }, "Replay"),
        " ", el("button", { type: "button", class: "purge danger", onclick: act(purgeLetter, letter), disabled: !canChange }, "Purge"))));
    const picker = el("select", { name: "service", onchange: (event) => {
      location.hash = `#/dead-letters${event.target.value ? `?service=${encodeURIComponent(event.target.value)}` : ""}`;
    } }, el("option", { value: "" }, "every service"),
    view.services.map((name) => el("option", { value: name, selected: name === service }, name)));
    show(
      el("h1", {}, `Dead letters (${view.letters.length}${view.letters.length >= view.limit ? "+" : ""})`),
      el("form", { class: "filters" }, el("label", {}, "service", picker)),
      canChange ? null : el("p", { class: "note" }, "Read-only: open the link the console printed when it started to replay or purge."),
      status,
      view.letters.length ? el("table", { id: "dead-letters" },
        el("tr", {}, ["id", "time", "service", "handler", "reason", "error", "deliveries", "type", "payload", ""].map((h) => el("th", {}, h))),
        rows) : el("p", { class: "note", id: "no-dead-letters" }, "no dead letters"),
    );
  };
  await draw();
}

// -- routing -----------------------------------------------------------------------------------------------------

const pages = { topology: topologyPage, streams: streamsPage, events: eventsPage, "dead-letters": deadLettersPage };

async function route() {
  clearInterval(refreshTimer);
  delete document.body.dataset.loaded;
  const name = (location.hash.replace(/^#\//, "").split("?")[0]) || "topology";
  for (const link of document.querySelectorAll("header nav a")) link.classList.toggle("current", link.dataset.page === name);
  try {
    await (pages[name] || topologyPage)();
    document.body.dataset.loaded = name;
  } catch (error) {
    show(failure(error));
  }
}

async function start() {
  try {
    canChange = (await api("/api/session")).can_change;
  } catch (error) {
    canChange = false;
  }
  document.getElementById("session").textContent = canChange ? "token given: replay and purge allowed" : "read-only";
  window.addEventListener("hashchange", route);
  await route();
}

start();
