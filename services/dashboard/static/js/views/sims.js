// SIMs and modems: list with limits and usage; admins add, edit, disable,
// delete; anyone who may send can ask a modem for its balance (USSD, menus
// answered within their session); admins see received PDUs kept raw.
import { api, can } from "../api.js";
import { h, replace, field, showErrors, toast, dangerButton, fmtTime, badge } from "../dom.js";
import { table, listOf, loading, errorBox, signalBars, onlineBadge } from "../widgets.js";
import { problemList } from "../problems.js";

const LIMITS = [["minute", "limit_per_minute"], ["day", "limit_per_day"], ["month", "limit_per_month"]];

function usageCell(sim) {
  const usage = sim.usage || {};
  return h("div", { class: "usage" }, LIMITS.map(([period, key]) => {
    const used = Number(usage[period] ?? 0);
    const limit = sim[key];
    const text = limit ? `${used} / ${limit} per ${period}` : `${used} per ${period}, no limit`;
    return h("div", null,
      limit ? h("meter", { min: 0, max: limit, value: Math.min(used, limit), high: limit * 0.8, optimum: 0, "aria-label": `Segments used this ${period}` }) : null,
      " ", text);
  }));
}

function intOrNull(v) {
  const t = String(v ?? "").trim();
  return t === "" ? null : Number(t);
}

export function render(main) {
  const out = h("div", { id: "sims" }, loading());
  const modemsOut = h("div", { id: "modems" });
  const rawOut = h("div", { id: "raw-pdus" });
  const editor = h("div", { id: "sim-editor" });
  const problemsOut = h("div", { id: "problems-box" });
  replace(main, h("h1", null, "SIMs & modems"), problemsOut,
    can.admin() ? h("div", { class: "actions" }, h("button", { type: "button", class: "primary", id: "add-sim", onclick: () => openEditor(null) }, "Add a SIM")) : null,
    editor, h("h2", null, "SIM cards"), out, h("h2", null, "Modems"), modemsOut,
    can.admin() ? h("h2", null, "Received PDUs kept raw") : null, can.admin() ? rawOut : null);
  let alive = true;
  let modems = [];

  function openEditor(sim) {
    const number = h("input", { name: "number", type: "tel", value: sim?.number || "", required: true });
    const label = h("input", { name: "label", value: sim?.label || "" });
    const status = h("select", { name: "status" },
      ["active", "inactive"].map((st) => h("option", { value: st, selected: (sim?.status || "active") === st }, st)));
    const limits = LIMITS.map(([period, key]) => h("input", { name: key, type: "number", min: 0, step: 1, inputmode: "numeric", value: sim?.[key] ?? "" }));
    const summary = h("p", { class: "form-error", role: "alert" });
    const form = h("form", { class: "card form-narrow", "aria-label": sim ? `Edit SIM ${sim.id}` : "Add a SIM", novalidate: true },
      h("h2", { style: { marginTop: 0 } }, sim ? `Edit SIM #${sim.id}` : "Add a SIM"),
      h("div", { class: "row" }, field("Number", number), field("Label", label), field("Status", status)),
      h("div", { class: "row" }, LIMITS.map(([period], i) => field(`Limit per ${period} (segments, empty = none)`, limits[i]))),
      summary,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, sim ? "Save" : "Add SIM"),
        h("button", { type: "button", onclick: () => replace(editor) }, "Close")));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const payload = { number: number.value.trim(), label: label.value.trim() || null, status: status.value };
      LIMITS.forEach(([, key], i) => { payload[key] = intOrNull(limits[i].value); });
      try {
        if (sim) await api.put(`/api/sim-cards/${sim.id}`, payload);
        else await api.post("/api/sim-cards", payload);
        toast(sim ? "SIM saved" : "SIM added");
        replace(editor);
        load();
      } catch (exc) {
        showErrors(form, exc, summary);
      }
    });
    replace(editor, form);
    number.focus();
  }

  async function ussd(modemId) {
    const input = h("input", { name: "code", value: "*100#", required: true });
    const result = h("p", { role: "status", class: "secret", hidden: true });
    const menuHint = h("p", { class: "hint", hidden: true }, "The network waits for your choice: type it above and send it.");
    const endSession = h("button", { type: "button", hidden: true, onclick: () => send({ cancel: true }) }, "End session");
    const summary = h("p", { class: "form-error", role: "alert" });
    const form = h("form", { class: "card form-narrow", "aria-label": `USSD on modem ${modemId}` },
      h("h2", { style: { marginTop: 0 } }, `Balance check on ${modemId}`),
      field("USSD code", input, "Usually *100# or your operator's balance code."),
      summary, result, menuHint,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Send USSD"), endSession,
        h("button", { type: "button", onclick: () => replace(editor) }, "Close")));
    async function send(body) {
      showErrors(form, null, summary);
      result.hidden = true;
      try {
        const res = await api.post(`/api/modems/${encodeURIComponent(modemId)}/ussd`, body);
        const r = res.result;
        const open = Boolean(r && r.session_open);
        result.textContent = body.cancel ? "Session ended." : typeof r === "string" ? r : (r && (r.text || r.message || r.response)) || JSON.stringify(r);
        result.hidden = false;
        menuHint.hidden = endSession.hidden = !open;
        if (open) { input.value = ""; input.focus(); }
      } catch (exc) {
        showErrors(form, exc, summary);
      }
    }
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      send({ code: input.value.trim() });
    });
    replace(editor, form);
    input.focus();
  }

  async function load() {
    try {
      const [sb, mb] = await Promise.allSettled([api.get("/api/sim-cards"), api.get("/api/modems")]);
      if (!alive) return;
      if (sb.status === "rejected") throw sb.reason;
      const sims = listOf(sb.value, "sim_cards");
      modems = mb.status === "fulfilled" ? listOf(mb.value, "modems") : [];
      replace(problemsOut, mb.status === "fulfilled" ? problemList(mb.value) : null);
      const cols = [
        { title: "#", key: "id" },
        { title: "Number", render: (x) => x.number || "–" },
        { title: "Label", opt: true, render: (x) => x.label || "" },
        { title: "Status", render: (x) => badge(x.status) },
        { title: "Modem", opt: true, render: (x) => (x.modem_id ? [String(x.modem_id), " ", onlineBadge(x.online)] : "–") },
        { title: "Signal", opt: true, render: (x) => signalBars(x.signal_quality) },
        { title: "Operator", opt: true, render: (x) => x.operator || "" },
        { title: "Usage (segments)", render: usageCell },
        { title: "Actions", render: (x) => h("div", { class: "actions" },
          can.admin() ? h("button", { type: "button", onclick: () => openEditor(x) }, "Edit") : null,
          can.admin() ? h("button", { type: "button", onclick: () => toggle(x) }, x.status === "active" ? "Disable" : "Enable") : null,
          can.admin() ? dangerButton("Delete", () => remove(x)) : null,
          can.admin() && x.modem_id ? h("button", { type: "button", onclick: () => ussd(x.modem_id) }, "Balance") : null) },
      ];
      replace(out, table(cols, sims, { caption: "SIM cards", empty: "No SIM cards yet. Workers register theirs when they start." }));
      const mcols = [
        { title: "Modem", render: (m) => String(m.modem_id ?? m.id) },
        { title: "State", render: (m) => onlineBadge(m.online) },
        { title: "Signal", render: (m) => signalBars(m.signal_quality) },
        { title: "Registration", render: (m) => m.registration ? badge(m.registration) : "" },
        { title: "Operator", opt: true, render: (m) => m.operator || "" },
        { title: "Device", opt: true, render: (m) => [m.manufacturer, m.model].filter(Boolean).join(" ") || m.device_path || "" },
        { title: "Problem", cls: "text", render: (m) => (m.problems && m.problems.length
          ? h("span", { class: "error-text" }, m.problems.map((p) => p.problem).join(" "))
          : "none") },
        { title: "Last seen", opt: true, render: (m) => fmtTime(m.last_seen_at) },
      ];
      replace(modemsOut, mb.status === "fulfilled"
        ? table(mcols, modems.map((m) => ({ ...m, id: m.modem_id ?? m.id })), { caption: "Modems", empty: "No modem is configured: see above for how to add one." })
        : errorBox(mb.reason));
      if (can.admin()) loadRaw();
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }

  async function loadRaw() {
    try {
      const res = await api.get("/api/modems/raw-pdus?limit=50");
      if (!alive) return;
      const rcols = [
        { title: "Received", render: (x) => fmtTime(x.received_at) },
        { title: "Kind", render: (x) => badge(x.kind) },
        { title: "Modem", render: (x) => x.modem_id || "" },
        { title: "From", opt: true, render: (x) => x.origin || "" },
        { title: "Why", cls: "text", render: (x) => x.reason || "" },
        { title: "PDU (hex)", cls: "text", render: (x) => h("code", null, x.pdu) },
      ];
      replace(rawOut, table(rcols, listOf(res, "raw_pdus"), {
        caption: "Received PDUs kept raw",
        empty: "None: every received PDU was decoded.",
      }));
    } catch (exc) {
      if (alive) replace(rawOut, errorBox(exc));
    }
  }

  async function toggle(sim) {
    try {
      await api.put(`/api/sim-cards/${sim.id}`, { status: sim.status === "active" ? "inactive" : "active" });
      toast(`SIM #${sim.id} ${sim.status === "active" ? "disabled" : "enabled"}`);
    } catch (exc) {
      toast(exc.message, "error");
    }
    load();
  }

  async function remove(sim) {
    try {
      await api.del(`/api/sim-cards/${sim.id}`);
      toast(`SIM #${sim.id} deleted`);
    } catch (exc) {
      toast(exc.message, "error");
    }
    load();
  }

  load();
  return () => { alive = false; };
}
