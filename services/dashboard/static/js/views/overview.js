// At a glance: today's counters and one card per modem, all kept live.
import { api } from "../api.js";
import { h, replace, fmtTime, badge } from "../dom.js";
import { signalBars, onlineBadge, listOf, errorBox, peerOf } from "../widgets.js";
import { problemList } from "../problems.js";

const STATES = ["queued", "sent", "delivered", "failed"];

function startOfToday() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.toISOString();
}

export function render(main, { socket }) {
  const counters = {};
  const counterBox = h("section", { class: "counters", "aria-label": "Today" },
    STATES.concat(["received"]).map((st) => {
      counters[st] = h("span", { class: "n", id: `count-${st}` }, "–");
      return h("div", { class: "card counter" }, counters[st], h("span", { class: "l" }, `${st} today`));
    }));
  const cards = h("div", { id: "modem-cards" });
  const problemsOut = h("div", { id: "problems-box" });
  const feed = h("ul", { class: "feed", id: "feed", "aria-live": "polite" });
  const modems = new Map();
  replace(main,
    h("h1", null, "Overview"),
    counterBox,
    h("h2", null, "Modems"),
    problemsOut,
    cards,
    h("h2", null, "Live activity"),
    h("div", { class: "card" }, feed, h("p", { class: "empty", id: "feed-empty" }, "Events appear here as they happen.")));

  let alive = true;
  let countTimer = null;
  let problemsTimer = null;

  async function loadCounts() {
    const since = startOfToday();
    const jobs = STATES.map((st) => api.get("/api/sms/outbox", { status: st, since, per_page: 1 })
      .then((b) => [st, b.pagination ? b.pagination.total : listOf(b, "messages").length]));
    jobs.push(api.get("/api/sms/inbox", { since, per_page: 1 })
      .then((b) => ["received", b.pagination ? b.pagination.total : listOf(b, "messages").length]));
    const results = await Promise.allSettled(jobs);
    if (!alive) return;
    results.forEach((r) => {
      if (r.status === "fulfilled") {
        const [st, n] = r.value;
        counters[st].textContent = n === null || n === undefined ? "?" : String(n);
      }
    });
  }

  function scheduleCounts() {
    // Bursts of events become one refresh.
    clearTimeout(countTimer);
    countTimer = setTimeout(loadCounts, 400);
  }

  function card(m) {
    const dl = h("dl", { class: "kv" },
      h("dt", null, "Signal"), h("dd", null, signalBars(m.signal_quality)),
      h("dt", null, "Registration"), h("dd", { "data-k": "registration" }, m.registration || "–"),
      h("dt", null, "Operator"), h("dd", { "data-k": "operator" }, m.operator || "–"),
      h("dt", null, "SIM number"), h("dd", { "data-k": "number" }, m.number || "–"),
      h("dt", null, "Queue"), h("dd", { "data-k": "queue_depth" }, String(m.queue_depth ?? 0)),
      h("dt", null, "Last error"), h("dd", { "data-k": "last_error", class: m.last_error ? "error-text" : "" }, m.last_error || "none"),
      m.last_seen_at ? [h("dt", null, "Last seen"), h("dd", null, fmtTime(m.last_seen_at))] : null);
    return h("article", { class: "card modem", "data-modem": String(m.modem_id), "aria-label": `Modem ${m.modem_id}` },
      h("h3", null, h("span", null, String(m.modem_id)), onlineBadge(m.online)), dl);
  }

  // With edge nodes (docs/deployment.md, "Several sites"), one group per
  // node: whether the centre hears it, and what its workers have not yet
  // recorded (their journals). Without, the cards as one grid.
  function nodeGroup(node, list) {
    const up = list.filter((m) => m.online).length;
    const backlog = list.reduce((n, m) => n + (Number(m.journal_backlog) || 0), 0);
    const site = list.find((m) => m.site)?.site;
    const link = up ? "link up" : "link lost";
    return h("section", { class: "node-group", "data-node": node || "", "aria-label": node ? `Node ${node}` : "Centre" },
      h("h3", null, node ? `Node ${node}` : "Centre", site ? h("span", { class: "node-site" }, ` · site ${site}`) : null),
      h("p", { class: "node-summary" },
        h("span", { class: up ? "badge badge-online" : "badge badge-offline", "data-k": "link" }, link), " ",
        `${up} of ${list.length} modems online · journal backlog `,
        h("span", { "data-k": "journal_backlog" }, String(backlog))),
      h("div", { class: "grid" }, list.map(card)));
  }

  function drawCards() {
    if (!modems.size) {
      replace(cards, h("p", { class: "empty" }, "No modem has reported yet."));
      return;
    }
    const sorted = [...modems.values()].sort((a, b) => String(a.modem_id).localeCompare(String(b.modem_id)));
    if (!sorted.some((m) => m.node)) {
      replace(cards, h("div", { class: "grid" }, sorted.map(card)));
      return;
    }
    const nodes = new Map();
    sorted.forEach((m) => nodes.set(m.node || "", [...(nodes.get(m.node || "") || []), m]));
    const names = [...nodes.keys()].sort((a, b) => (a === "" ? -1 : b === "" ? 1 : a.localeCompare(b)));
    replace(cards, names.map((n) => nodeGroup(n, nodes.get(n))));
  }

  async function loadModems() {
    try {
      const [mb, sb] = await Promise.allSettled([api.get("/api/modems"), api.get("/api/sim-cards")]);
      if (!alive) return;
      const sims = sb.status === "fulfilled" ? listOf(sb.value, "sim_cards") : [];
      const byModem = new Map(sims.filter((x) => x.modem_id).map((x) => [x.modem_id, x]));
      const list = mb.status === "fulfilled" ? listOf(mb.value, "modems") : [];
      replace(problemsOut, mb.status === "fulfilled" ? problemList(mb.value) : null);
      list.forEach((m) => {
        const id = m.modem_id ?? m.id;
        const sim = byModem.get(id) || {};
        modems.set(String(id), {
          ...m,
          modem_id: id,
          number: m.number ?? sim.number,
          sim_card_id: m.sim_card_id ?? sim.id,
        });
      });
      if (mb.status === "rejected" && !list.length) {
        // Fall back on what the SIM list knows about its modems.
        sims.filter((x) => x.modem_id).forEach((x) => modems.set(String(x.modem_id), {
          modem_id: x.modem_id, online: x.online, signal_quality: x.signal_quality,
          registration: x.registration, operator: x.operator, number: x.number, sim_card_id: x.id,
        }));
      }
      drawCards();
    } catch (exc) {
      replace(cards, errorBox(exc));
    }
  }

  function addFeed(text, state) {
    const empty = document.getElementById("feed-empty");
    if (empty) empty.remove();
    feed.prepend(h("li", null, h("time", null, new Date().toLocaleTimeString()), " ", badge(state), " ", text));
    while (feed.children.length > 20) feed.lastChild.remove();
  }

  const offs = [
    socket.on("modem_status", (d) => {
      if (!d || d.modem_id === undefined) return;
      const key = String(d.modem_id);
      modems.set(key, { ...(modems.get(key) || {}), ...d });
      drawCards();
      // The problem list comes from the API only (one source with the SIMs page).
      clearTimeout(problemsTimer);
      problemsTimer = setTimeout(loadModems, 500);
    }),
    socket.on("sms_status_update", (d) => {
      // An inbound message also arrives as sms_received, shown below.
      if (!d || d.direction === "inbound") return;
      const peer = d.receiver_number || peerOf(d) || "";
      addFeed(`#${d.message_id ?? d.id} to ${peer}`, d.status || d.state);
      scheduleCounts();
    }),
    socket.on("sms_received", (d) => {
      if (!d) return;
      addFeed(`from ${d.sender}: ${d.message ?? ""}`, "received");
      scheduleCounts();
    }),
    socket.on("resync", () => { loadCounts(); loadModems(); }),
  ];

  loadCounts();
  loadModems();
  const refresh = setInterval(() => { loadCounts(); }, 60000);

  return () => {
    alive = false;
    clearTimeout(countTimer);
    clearTimeout(problemsTimer);
    clearInterval(refresh);
    offs.forEach((off) => off());
  };
}
