// Edge nodes (admin only): a node and its one-time enrolment token, shown
// once with the command its operator runs; a new token for a replaced Pi;
// revoke (its database login and broker users stop working at once).
import { api } from "../api.js";
import { h, replace, field, showErrors, toast, dangerButton, fmtTime, badge } from "../dom.js";
import { table, listOf, loading, errorBox, copyButton } from "../widgets.js";

export function render(main) {
  const name = h("input", { name: "name", required: true, maxLength: 48, placeholder: "e.g. berlin-1", autocomplete: "off" });
  const site = h("input", { name: "site", maxLength: 64, placeholder: "e.g. de", autocomplete: "off" });
  const modems = h("input", { name: "modems", type: "number", min: 1, max: 16, value: 4 });
  const summary = h("p", { class: "form-error", role: "alert" });
  const form = h("form", { class: "card", "aria-label": "Add an edge node", novalidate: true },
    h("div", { class: "row" },
      field("Node name", name, "Its modems become <name>-1, <name>-2, ..."),
      field("Site", site, "Optional: where its SIMs are, for site routing"),
      field("Modems", modems),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "create-node" }, "Add node"))),
    summary);
  const shown = h("div", { id: "new-token" });
  const out = h("div", { id: "nodes" }, loading());
  replace(main, h("h1", null, "Edge nodes"),
    h("p", { class: "hint" }, "An edge node runs modem workers at another site and joins this centre with a one-time token (valid 24 hours). ",
      "It trades the token for a database login and broker users of its own; revoking the node ends them."),
    form, shown, h("h2", null, "Nodes"), out);
  let alive = true;

  function showToken(res) {
    const command = h("code", { class: "secret", id: "join-command" }, res.join);
    const copy = copyButton(res.join, command, { id: "copy-join" });
    replace(shown, h("div", { class: "card", role: "status" },
      h("p", null, h("strong", null, `Token for node ${res.node.name}.`),
        ` Run this on the node before ${fmtTime(res.token_expires_at)}. It works once and will not be shown again.`),
      h("p", null, command),
      h("p", { class: "hint" }, "centre-cert.pem: this centre's certificate, copied to the node beforehand ",
        "(on the centre: docker compose exec dashboard cat /etc/nginx/tls/cert.pem). The node checks the centre with it before it sends the token."),
      h("div", { class: "actions" }, copy, h("button", { type: "button", onclick: () => replace(shown) }, "Done"))));
    copy.focus();
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(form, null, summary);
    const body = { name: name.value.trim(), modems: Number(modems.value) };
    if (site.value.trim()) body.site = site.value.trim();
    try {
      const res = await api.post("/api/nodes", body);
      name.value = "";
      showToken(res);
      load();
    } catch (exc) {
      showErrors(form, exc, summary);
    }
  });

  async function act(fn, done) {
    try {
      const res = await fn();
      if (done) toast(done);
      return res;
    } catch (exc) {
      toast(exc.message, "error");
      return null;
    } finally {
      load();
    }
  }

  async function load() {
    try {
      const body = await api.get("/api/nodes");
      if (!alive) return;
      const cols = [
        { title: "Node", render: (n) => n.name },
        { title: "Site", render: (n) => n.site || "" },
        { title: "Modems online", render: (n) => `${n.online} of ${n.modems}` },
        { title: "State", render: (n) => badge(n.state) },
        { title: "Enrolled", opt: true, render: (n) => (n.enrolled_at ? `${fmtTime(n.enrolled_at)} from ${n.enrolled_from || "?"}` : "never") },
        { title: "Actions", render: (n) => (n.state === "revoked" ? "" : h("div", { class: "actions" },
          h("button", { type: "button", "aria-label": `New token for ${n.name}`, onclick: async () => {
            const res = await act(() => api.post(`/api/nodes/${n.id}/token`));
            if (res) showToken(res);
          } }, "New token"),
          dangerButton("Revoke", () => act(() => api.del(`/api/nodes/${n.id}`), `Node ${n.name} revoked`),
            { "aria-label": `Revoke node ${n.name}` }))) },
      ];
      replace(out, table(cols, listOf(body, "nodes"), { caption: "Edge nodes", empty: "No edge node yet." }));
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }

  load();
  return () => { alive = false; };
}
