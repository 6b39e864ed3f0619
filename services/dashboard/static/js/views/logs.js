// Audit trail with server-side filters and pagination.
import { api } from "../api.js";
import { h, replace, field, badge } from "../dom.js";
import { table, pager, listOf, loading, errorBox, timeCell } from "../widgets.js";

export function render(main) {
  const filters = { page: 1, per_page: 50 };
  const action = h("input", { name: "action", type: "search", placeholder: "e.g. send_sms" });
  const status = h("select", { name: "status" }, ["", "success", "error", "failed", "denied"].map((st) => h("option", { value: st }, st || "Any")));
  const since = h("input", { name: "since", type: "datetime-local" });
  const until = h("input", { name: "until", type: "datetime-local" });
  const form = h("form", { class: "row card", role: "search", "aria-label": "Filter logs" },
    field("Action", action), field("Status", status), field("From", since), field("To", until),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Filter")));
  const out = h("div", { id: "logs" }, loading());
  replace(main, h("h1", null, "Logs"), form, out);
  let alive = true;

  const iso = (v) => (v ? new Date(v).toISOString() : undefined);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    Object.assign(filters, { page: 1, action: action.value.trim(), status: status.value, since: iso(since.value), until: iso(until.value) });
    load();
  });

  const cols = [
    { title: "Time", render: (l) => timeCell(l.created_at) },
    { title: "Action", render: (l) => l.action },
    { title: "Actor", render: (l) => l.actor || "" },
    { title: "Status", render: (l) => badge(l.status) },
    { title: "SIM", opt: true, render: (l) => l.sender_sim || "" },
    { title: "Details", cls: "text", render: (l) => l.details || "" },
  ];

  async function load() {
    replace(out, loading());
    try {
      const body = await api.get("/api/logs", filters);
      if (!alive) return;
      replace(out, table(cols, listOf(body, "logs"), { caption: "Logs", empty: "No log entries match." }),
        pager(body.pagination, filters.page, (p) => { filters.page = p; load(); }));
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }
  load();
  return () => { alive = false; };
}
