// Messages: outbox and inbox tables (filtered and paginated by the server),
// conversations grouped by number, and one message's detail with its timeline.
import { api, can } from "../api.js";
import { h, replace, fmtTime, badge, field, toast, dangerButton } from "../dom.js";
import { pager, table, tableRow, timeCell, listOf, loading, errorBox, peerOf } from "../widgets.js";

const OUT_STATES = ["", "queued", "sending", "sent", "delivered", "failed", "expired", "cancelled", "unknown"];

function tabs(current) {
  const items = [["outbox", "Outbox"], ["inbox", "Inbox"], ["conversations", "Conversations"]];
  return h("nav", { class: "tabs", "aria-label": "Message views" }, items.map(([k, t]) =>
    h("a", { href: `#/messages/${k}`, "aria-current": k === current ? "page" : null }, t)));
}

export function render(main, ctx) {
  const [tab = "outbox", arg] = ctx.args || [];
  if (tab === "detail") return renderDetail(main, ctx, arg);
  if (tab === "conversations") return renderConversations(main, ctx, arg);
  return renderTable(main, ctx, tab === "inbox" ? "inbox" : "outbox");
}

function columnsFor(kind) {
  const cols = [
    // The id is a link, so the keyboard reaches the detail too.
    { title: "#", render: (m) => h("a", { href: `#/messages/detail/${encodeURIComponent(m.id)}`, "aria-label": `Message ${m.id}` }, String(m.id)) },
    { title: "Time", render: (m) => timeCell(m.created_at) },
    { title: kind === "inbox" ? "From" : "To", render: (m) => (kind === "inbox" ? m.sender : m.recipient) || "" },
    { title: "Message", cls: "text", render: (m) => m.message ?? "" },
    { title: "Status", render: (m) => badge(m.status) },
    { title: "SIM", opt: true, render: (m) => m.sender_sim || (m.sim_card_id ? `SIM ${m.sim_card_id}` : "") },
  ];
  if (kind === "outbox") cols.push({ title: "Segments", opt: true, render: (m) => String(m.segments ?? "") });
  return cols;
}

function renderTable(main, { socket }, kind) {
  const filters = { page: 1, per_page: 50 };
  const q = h("input", { name: "q", type: "search", placeholder: "Text contains…" });
  const number = h("input", { name: "number", type: "search", placeholder: "+49…" });
  const status = h("select", { name: "status" }, OUT_STATES.map((st) => h("option", { value: st }, st || "Any status")));
  const since = h("input", { name: "since", type: "date" });
  const until = h("input", { name: "until", type: "date" });
  const form = h("form", { class: "row card", role: "search", "aria-label": "Filter messages" },
    field("Search text", q),
    field("Number", number),
    kind === "outbox" ? field("Status", status) : null,
    field("From date", since),
    field("To date", until),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Filter"),
      h("button", { type: "reset" }, "Clear")));
  const out = h("div", { id: "messages-table" }, loading());
  replace(main, h("h1", null, kind === "inbox" ? "Inbox" : "Outbox"), tabs(kind), form, out);
  const cols = columnsFor(kind);
  let alive = true;
  let rows = [];

  const open = (m) => { location.hash = `#/messages/detail/${m.id}`; };

  async function load() {
    replace(out, loading());
    const params = { ...filters };
    try {
      const body = await api.get(`/api/sms/${kind}`, params);
      if (!alive) return;
      rows = listOf(body, "messages");
      replace(out, table(cols, rows, { onOpen: open, caption: kind, empty: "No messages match." }),
        pager(body.pagination, filters.page, (p) => { filters.page = p; load(); }));
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }

  function dayBound(value, end) {
    if (!value) return undefined;
    const d = new Date(`${value}T00:00:00`);
    if (end) d.setDate(d.getDate() + 1);
    return d.toISOString();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    Object.assign(filters, {
      page: 1, q: q.value.trim(), number: number.value.trim(),
      status: kind === "outbox" ? status.value : undefined,
      since: dayBound(since.value, false), until: dayBound(until.value, true),
    });
    load();
  });
  form.addEventListener("reset", () => {
    setTimeout(() => { Object.keys(filters).forEach((k) => delete filters[k]); Object.assign(filters, { page: 1, per_page: 50 }); load(); });
  });

  const unfiltered = () => filters.page === 1 && !filters.q && !filters.number && !filters.status && !filters.since && !filters.until;
  const tbody = () => out.querySelector("tbody");

  const offs = [];
  if (kind === "outbox") {
    offs.push(socket.on("sms_status_update", (d) => {
      if (!d) return;
      const id = d.message_id ?? d.id;
      const tr = out.querySelector(`tr[data-id="${CSS.escape(String(id))}"]`);
      if (tr) {
        const cell = tr.children[4];
        cell.replaceChildren(badge(d.status || d.state));
        tr.classList.remove("flash");
        void tr.offsetWidth;
        tr.classList.add("flash");
      } else if (unfiltered() && tbody() && (d.direction || "outbound") === "outbound") {
        const row = { id, created_at: d.timestamp, recipient: d.receiver_number, message: d.message, status: d.status || d.state, sender_sim: d.sender_number, sim_card_id: d.sim_card_id };
        tbody().querySelector("td.empty")?.parentElement.remove();
        const tr2 = tableRow(cols, row, { onOpen: open });
        tr2.classList.add("flash");
        tbody().prepend(tr2);
      }
    }));
  } else {
    offs.push(socket.on("sms_received", (d) => {
      if (!d || !unfiltered() || !tbody()) return;
      const row = { id: d.id, created_at: d.timestamp, sender: d.sender, message: d.message, status: "received", sim_card_id: d.sim_card_id };
      tbody().querySelector("td.empty")?.parentElement.remove();
      const tr = tableRow(cols, row, { onOpen: open });
      tr.classList.add("flash");
      tbody().prepend(tr);
    }));
  }
  offs.push(socket.on("resync", load));
  load();
  return () => { alive = false; offs.forEach((o) => o()); };
}

function renderConversations(main, { socket }, selected) {
  const list = h("ul", { class: "thread-list", id: "threads" });
  const pane = h("section", { class: "card", id: "thread", "aria-live": "polite" }, h("p", { class: "empty" }, "Choose a conversation."));
  replace(main, h("h1", null, "Conversations"), tabs("conversations"),
    h("div", { class: "threads" }, h("div", { class: "card", style: { padding: "0" } }, list), pane));
  const threads = new Map();
  let current = selected || null;
  let alive = true;

  function add(m) {
    const peer = peerOf(m);
    if (!peer) return;
    if (!threads.has(peer)) threads.set(peer, new Map());
    threads.get(peer).set(`${m.direction}:${m.id}`, m);
  }

  function lastOf(msgs) {
    return [...msgs.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)) || b.id - a.id)[0];
  }

  function drawList() {
    const entries = [...threads.entries()].map(([peer, msgs]) => [peer, lastOf(msgs)])
      .sort((a, b) => String(b[1].created_at).localeCompare(String(a[1].created_at)));
    if (!entries.length) {
      replace(list, h("li", { class: "empty", style: { padding: ".7rem" } }, "No messages yet."));
      return;
    }
    replace(list, entries.map(([peer, last]) => h("li", null,
      h("a", { href: `#/messages/conversations/${encodeURIComponent(peer)}`, "aria-current": peer === current ? "true" : null },
        h("span", { class: "num" }, peer),
        h("span", { class: "last" }, `${last.direction === "inbound" ? "" : "You: "}${last.message ?? ""}`)))));
  }

  function drawThread() {
    if (!current) return;
    const msgs = [...(threads.get(current) || new Map()).values()]
      .sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)) || a.id - b.id);
    const bubbles = h("div", { class: "bubbles" }, msgs.map((m) => h("div", { class: `bubble ${m.direction === "inbound" ? "in" : "out"}`, "data-id": String(m.id) },
      m.message ?? "",
      h("span", { class: "meta" }, fmtTime(m.created_at), m.direction === "inbound" ? "" : ` · ${m.status}`))));
    replace(pane, h("h2", { style: { marginTop: "0" } }, current), msgs.length ? bubbles : h("p", { class: "empty" }, "No messages with this number yet."),
      can.send() ? h("p", null, h("a", { href: `#/send/${encodeURIComponent(current)}` }, "Write to this number")) : null);
  }

  async function load() {
    replace(list, h("li", null, loading()));
    try {
      // Recent traffic only: the table views page through everything.
      const [inb, outb] = await Promise.all([
        api.get("/api/sms/inbox", { per_page: 200 }),
        api.get("/api/sms/outbox", { per_page: 200 }),
      ]);
      if (!alive) return;
      listOf(inb, "messages").forEach((m) => add({ ...m, direction: "inbound" }));
      listOf(outb, "messages").forEach((m) => add({ ...m, direction: "outbound" }));
      if (current) {
        // An older conversation may fall outside the recent window.
        const [a, b] = await Promise.all([
          api.get("/api/sms/inbox", { number: current, per_page: 200 }),
          api.get("/api/sms/outbox", { number: current, per_page: 200 }),
        ]);
        if (!alive) return;
        listOf(a, "messages").forEach((m) => add({ ...m, direction: "inbound" }));
        listOf(b, "messages").forEach((m) => add({ ...m, direction: "outbound" }));
      }
      drawList();
      drawThread();
    } catch (exc) {
      if (alive) replace(list, h("li", null, errorBox(exc)));
    }
  }

  const offs = [
    socket.on("sms_received", (d) => {
      if (!d) return;
      add({ id: d.id, direction: "inbound", sender: d.sender, recipient: d.recipient, message: d.message, created_at: d.timestamp, status: "received" });
      drawList();
      drawThread();
    }),
    socket.on("sms_status_update", (d) => {
      if (!d || (d.direction && d.direction !== "outbound")) return;
      const id = d.message_id ?? d.id;
      const peer = d.receiver_number;
      const prev = threads.get(peer)?.get(`outbound:${id}`);
      add({ ...(prev || {}), id, direction: "outbound", recipient: peer, message: d.message ?? prev?.message, created_at: prev?.created_at || d.timestamp, status: d.status || d.state });
      drawList();
      drawThread();
    }),
    socket.on("resync", load),
  ];
  load();
  return () => { alive = false; offs.forEach((o) => o()); };
}

function renderDetail(main, { socket }, id) {
  const box = h("div", { id: "message-detail" }, loading());
  replace(main, h("p", null, h("a", { href: "#/messages/outbox" }, "← Messages")), h("h1", null, `Message #${id}`), box);
  let alive = true;

  async function load() {
    try {
      const body = await api.get(`/api/sms/${encodeURIComponent(id)}`);
      if (!alive) return;
      const m = body.message || body;
      const events = m.events || [];
      const cancel = can.send() && m.status === "queued"
        ? dangerButton("Cancel this message", doCancel, { id: "cancel-button" })
        : null;
      replace(box,
        h("div", { class: "card" },
          h("dl", { class: "kv" },
            h("dt", null, "Status"), h("dd", { id: "detail-status" }, badge(m.status)),
            h("dt", null, "Direction"), h("dd", null, m.direction || ""),
            h("dt", null, "From"), h("dd", null, m.sender || m.sender_sim || ""),
            h("dt", null, "To"), h("dd", null, m.recipient || ""),
            h("dt", null, "Text"), h("dd", { id: "detail-text", class: "text" }, m.message ?? ""),
            h("dt", null, "Encoding"), h("dd", null, `${m.encoding || ""} · ${m.segments ?? "?"} segment(s)`),
            h("dt", null, "SIM"), h("dd", null, m.sender_sim || (m.sim_card_id ? `SIM ${m.sim_card_id}` : "–")),
            m.site ? [h("dt", null, "Site"), h("dd", { id: "detail-site" }, `${m.site} (only SIMs there)`)] : null,
            h("dt", null, "Priority"), h("dd", null, String(m.priority ?? "")),
            m.send_at ? [h("dt", null, "Send at"), h("dd", null, fmtTime(m.send_at))] : null,
            m.error_text || m.error_code ? [h("dt", null, "Error"), h("dd", { class: "error-text" }, `${m.error_code ?? ""} ${m.error_text ?? ""}`.trim())] : null,
            h("dt", null, "Created"), h("dd", null, fmtTime(m.created_at))),
          cancel ? h("div", { class: "actions", style: { marginTop: ".8rem" } }, cancel) : null),
        h("h2", null, "Timeline"),
        events.length
          ? h("ol", { class: "timeline", id: "timeline" }, events.map((e) => h("li", null,
            badge(e.state), " ", h("time", { datetime: String(e.at) }, fmtTime(e.at)),
            e.source ? ` · ${e.source}` : "",
            e.error_code || e.error_text ? h("div", { class: "error-text" }, `${e.error_code ?? ""} ${e.error_text ?? ""}`.trim()) : null,
            e.detail ? h("div", { class: "hint" }, e.detail) : null)))
          : h("p", { class: "empty" }, "No state changes recorded yet."));
    } catch (exc) {
      if (alive) replace(box, errorBox(exc));
    }
  }

  async function doCancel() {
    try {
      await api.post(`/api/sms/${encodeURIComponent(id)}/cancel`);
      toast(`Message #${id} cancelled`);
    } catch (exc) {
      toast(exc.message, "error");
    }
    load();
  }

  const offs = [
    socket.on("sms_status_update", (d) => {
      if (d && String(d.message_id ?? d.id) === String(id)) load();
    }),
    socket.on("resync", load),
  ];
  load();
  return () => { alive = false; offs.forEach((o) => o()); };
}
