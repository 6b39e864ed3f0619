// Webhooks: add (secret shown once), test, delete, and each one's deliveries.
import { api } from "../api.js";
import { h, replace, field, showErrors, toast, dangerButton, fmtTime, badge } from "../dom.js";
import { table, listOf, loading, errorBox } from "../widgets.js";

const EVENTS = ["message.received", "message.sent", "message.delivered", "message.failed", "message.expired", "modem.offline", "modem.online"];

export function render(main) {
  const url = h("input", { name: "url", type: "url", required: true, placeholder: "https://example.internal/hooks/sms" });
  const boxes = EVENTS.map((e) => h("input", { type: "checkbox", value: e, checked: true, id: `ev-${e.replace(/\W/g, "-")}` }));
  const events = h("fieldset", { class: "field", "data-field": "events" },
    h("legend", null, "Events"),
    h("div", { class: "row" }, EVENTS.map((e, i) => h("span", null, boxes[i], " ", h("label", { for: boxes[i].id, style: { display: "inline", fontWeight: "400" } }, e)))),
    h("input", { type: "hidden", name: "events", id: "events-hidden" }),
    h("p", { class: "field-error", id: "events-hidden-err", role: "alert" }));
  const summary = h("p", { class: "form-error", role: "alert" });
  const form = h("form", { class: "card", "aria-label": "Add a webhook", novalidate: true },
    field("URL", url), events, summary,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add webhook")));
  const secretBox = h("div", { id: "webhook-secret" });
  const out = h("div", { id: "webhooks" }, loading());
  const deliveries = h("section", { id: "deliveries" });
  replace(main, h("h1", null, "Webhooks"), form, secretBox, h("h2", null, "Your webhooks"), out, deliveries);
  let alive = true;

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(form, null, summary);
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    try {
      const res = await api.post("/api/webhooks", { url: url.value.trim(), events: chosen });
      url.value = "";
      replace(secretBox, h("div", { class: "card", role: "status" },
        h("p", null, h("strong", null, "Webhook added."), " Its signing secret is shown once; store it to verify signatures:"),
        h("p", null, h("code", { class: "secret" }, res.secret || "")),
        h("button", { type: "button", onclick: () => replace(secretBox) }, "I have stored it")));
      load();
    } catch (exc) {
      showErrors(form, exc, summary);
    }
  });

  async function showDeliveries(hook) {
    replace(deliveries, h("h2", null, `Deliveries of webhook #${hook.id}`), loading());
    try {
      const body = await api.get(`/api/webhooks/${hook.id}/deliveries`, { per_page: 50 });
      if (!alive) return;
      const cols = [
        { title: "Created", render: (d) => fmtTime(d.created_at) },
        { title: "Event", render: (d) => d.event_type },
        { title: "Status", render: (d) => badge(d.status) },
        { title: "Attempts", render: (d) => String(d.attempts ?? "") },
        { title: "HTTP", render: (d) => String(d.last_status_code ?? "") },
        { title: "Error", cls: "text", render: (d) => d.last_error || "" },
      ];
      replace(deliveries, h("h2", null, `Deliveries of webhook #${hook.id}`),
        h("button", { type: "button", onclick: () => showDeliveries(hook) }, "Refresh"),
        table(cols, listOf(body, "deliveries"), { caption: "Deliveries", empty: "Nothing delivered yet." }));
    } catch (exc) {
      replace(deliveries, errorBox(exc));
    }
  }

  async function load() {
    try {
      const body = await api.get("/api/webhooks");
      if (!alive) return;
      const cols = [
        { title: "#", key: "id" },
        { title: "URL", cls: "text", render: (w) => w.url },
        { title: "Events", cls: "text", opt: true, render: (w) => (w.events || []).join(", ") },
        { title: "State", render: (w) => badge(w.failing ? "failing" : w.is_active === false ? "inactive" : "active") },
        { title: "Actions", render: (w) => h("div", { class: "actions" },
          h("button", { type: "button", onclick: async () => {
            try { await api.post(`/api/webhooks/${w.id}/test`); toast("Test delivery queued"); } catch (exc) { toast(exc.message, "error"); }
            setTimeout(() => showDeliveries(w), 1000);
          } }, "Test"),
          h("button", { type: "button", onclick: () => showDeliveries(w) }, "Deliveries"),
          dangerButton("Delete", async () => {
            try { await api.del(`/api/webhooks/${w.id}`); toast("Webhook deleted"); } catch (exc) { toast(exc.message, "error"); }
            load();
          })) },
      ];
      replace(out, table(cols, listOf(body, "webhooks"), { caption: "Webhooks", empty: "No webhooks yet." }));
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }
  load();
  return () => { alive = false; };
}
