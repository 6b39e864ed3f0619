// API keys: named, shown once at creation, revocable.
import { api, can } from "../api.js";
import { h, replace, field, showErrors, toast, dangerButton, fmtTime, badge } from "../dom.js";
import { table, listOf, loading, errorBox, copyButton } from "../widgets.js";

export function render(main) {
  const name = h("input", { name: "name", required: true, maxLength: 100, placeholder: "e.g. billing system" });
  const summary = h("p", { class: "form-error", role: "alert" });
  const form = h("form", { class: "card form-narrow", "aria-label": "Create an API key", novalidate: true },
    h("div", { class: "row" }, field("Name of the new key", name),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "create-key" }, "Create key"))),
    summary);
  const shown = h("div", { id: "new-key" });
  const out = h("div", { id: "keys" }, loading());
  replace(main, h("h1", null, "API keys"),
    h("p", { class: "hint" }, "Clients send a key in the X-API-Key header. A key is shown once, when it is created; only its prefix is kept visible."),
    form, shown, out);
  let alive = true;

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(form, null, summary);
    if (!name.value.trim()) {
      showErrors(form, { message: "Give the key a name.", fields: { name: "A name tells keys apart when you revoke one." } }, summary);
      name.focus();
      return;
    }
    try {
      const res = await api.post("/api/api-keys", { name: name.value.trim() });
      name.value = "";
      const value = h("code", { class: "secret", id: "new-key-value" }, res.api_key);
      const copy = copyButton(res.api_key, value, { id: "copy-key" });
      replace(shown, h("div", { class: "card", role: "status" },
        h("p", null, h("strong", null, `Key "${res.name}" created.`), " Copy it now: it will not be shown again."),
        h("p", null, value), h("div", { class: "actions" }, copy,
          h("button", { type: "button", onclick: () => replace(shown) }, "I have stored it"))));
      copy.focus();
      load();
    } catch (exc) {
      showErrors(form, exc, summary);
    }
  });

  async function load() {
    try {
      // Revoked keys stay listed (greyed by their badge): who had access matters.
      const body = await api.get("/api/api-keys", { include_revoked: 1, all: can.admin() ? 1 : undefined });
      if (!alive) return;
      const keys = listOf(body, "api_keys");
      const cols = [
        { title: "Name", render: (k) => k.name },
        { title: "Prefix", render: (k) => h("code", null, k.prefix || "") },
        can.admin() ? { title: "Owner", opt: true, render: (k) => k.username || String(k.user_id ?? "") } : null,
        { title: "Created", opt: true, render: (k) => fmtTime(k.created_at) },
        { title: "Last used", opt: true, render: (k) => fmtTime(k.last_used_at) || "never" },
        { title: "State", render: (k) => badge(k.revoked_at ? "revoked" : k.active === false ? "expired" : "active") },
        { title: "", render: (k) => (k.revoked_at ? "" : dangerButton("Revoke", () => revoke(k), { "aria-label": `Revoke key ${k.name}` })) },
      ].filter(Boolean);
      replace(out, table(cols, keys, { caption: "API keys", empty: "No keys yet." }));
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }

  async function revoke(k) {
    try {
      await api.del(`/api/api-keys/${k.id}`);
      toast(`Key "${k.name}" revoked`);
    } catch (exc) {
      toast(exc.message, "error");
    }
    load();
  }

  load();
  return () => { alive = false; };
}
