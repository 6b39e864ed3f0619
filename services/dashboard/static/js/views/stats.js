// Statistics: current figures and charts over time from GET /api/statistics
// (`window` adds `series`: host samples and message buckets).
import { api } from "../api.js";
import { h, replace, fmtBytes } from "../dom.js";
import { loading, errorBox } from "../widgets.js";
import { lineChart, barChart } from "../charts.js";

const WINDOWS = [["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"]];

function pct(v, fraction = false) {
  const n = Number(v);
  if (v === null || v === undefined || !Number.isFinite(n)) return "–";
  return `${(fraction ? n * 100 : n).toFixed(1)} %`;
}

function duration(sec) {
  const n = Number(sec);
  if (!Number.isFinite(n)) return "–";
  const d = Math.floor(n / 86400);
  const hh = Math.floor((n % 86400) / 3600);
  const m = Math.floor((n % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  return hh ? `${hh} h ${m} m` : `${m} min`;
}

function figure(label, value, id) {
  return h("div", { class: "card counter" }, h("span", { class: "n", id }, value), h("span", { class: "l" }, label));
}

function series(rows, key, field, name) {
  return { name, points: rows.map((r) => [r[key], r[field] ?? null]) };
}

export function render(main) {
  const range = h("select", { name: "window", id: "stats-window" },
    WINDOWS.map(([v, t]) => h("option", { value: v, selected: v === "7d" }, t)));
  const out = h("div", { id: "stats" }, loading());
  replace(main, h("h1", null, "Statistics"),
    h("div", { class: "field field-inline" }, h("label", { for: "stats-window" }, "Period"), range), out);
  let alive = true;

  async function load() {
    try {
      const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      const st = await api.get("/api/statistics", { window: range.value, tz });
      if (!alive) return;
      const msgs = st.messages || {};
      const ser = st.series || {};
      const host = ser.host || [];
      const buckets = ser.messages || [];
      const bkey = buckets.length && "date" in buckets[0] ? "date" : "ts";
      const rate = buckets.map((b) => {
        const decided = (b.delivered || 0) + (b.failed || 0);
        return [b[bkey], decided ? Math.round((1000 * b.delivered) / decided) / 10 : null];
      });
      const sims = (st.sim_cards && st.sim_cards.by_sim) || [];
      const simKey = (x) => x.number || `SIM ${x.id}`;
      const figures = h("section", { class: "counters figures", "aria-label": "Now" },
        figure("messages in all", String(msgs.total ?? "–"), "stat-total"),
        figure("today", String(msgs.today ?? "–"), "stat-today"),
        figure("received", String(msgs.incoming ?? "–")),
        figure("sent", String(msgs.outgoing ?? "–")),
        figure(`delivery rate (${(st.delivery_rate && st.delivery_rate.window) || "24h"})`, pct(st.delivery_rate && st.delivery_rate.rate, true)),
        figure("in the queue", String((st.queue && st.queue.depth) ?? "–")),
        figure("CPU", pct(st.cpu && st.cpu.percent)),
        figure("memory", pct(st.memory && st.memory.percent)),
        figure("temperature", st.temperature && Number.isFinite(st.temperature.celsius) ? `${st.temperature.celsius.toFixed(1)} °C` : "–"),
        figure("disk", pct(st.disk && st.disk.percent)),
        figure("uptime", duration(st.uptime && st.uptime.seconds)),
        figure("database", fmtBytes(st.database && st.database.size_bytes)));
      const stale = st.host && st.host.stale
        ? h("p", { class: "hint", role: "status" }, "Host figures are stale: the statistics collector has not reported recently.") : null;
      const charts = h("div", { class: "charts" },
        barChart(bkey === "date" ? "Messages per day" : "Messages per hour", [
          series(buckets, bkey, "outgoing", "sent"), series(buckets, bkey, "incoming", "received")]),
        barChart("Messages per SIM", [
          { name: "sent", points: sims.map((x) => [simKey(x), x.sent]) },
          { name: "delivered", points: sims.map((x) => [simKey(x), x.delivered]) },
          { name: "failed", points: sims.map((x) => [simKey(x), x.failed]) },
          { name: "received", points: sims.map((x) => [simKey(x), x.received]) }], { sort: false }),
        lineChart("Delivery rate", [{ name: "delivered %", points: rate }], " %"),
        lineChart("CPU", [series(host, "ts", "cpu_percent", "CPU %")], " %"),
        lineChart("Memory", [series(host, "ts", "memory_percent", "memory %")], " %"),
        lineChart("Temperature", [series(host, "ts", "temperature_celsius", "°C")], " °C"));
      replace(out, figures, stale, charts);
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }
  range.addEventListener("change", load);
  load();
  const t = setInterval(load, 60000);
  return () => { alive = false; clearInterval(t); };
}
