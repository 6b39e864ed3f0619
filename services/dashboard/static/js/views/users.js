// Users (admin only): create, change role, disable, reset password, delete.
import { api, getSession } from "../api.js";
import { h, replace, field, showErrors, toast, dangerButton, fmtTime, badge } from "../dom.js";
import { table, listOf, loading, errorBox } from "../widgets.js";

const ROLES = ["viewer", "user", "admin"];

export function render(main) {
  const username = h("input", { name: "username", required: true, autocomplete: "off" });
  const password = h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" });
  const role = h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r, selected: r === "user" }, r)));
  const summary = h("p", { class: "form-error", role: "alert" });
  const form = h("form", { class: "card", "aria-label": "Add a user", novalidate: true },
    h("div", { class: "row" }, field("Username", username), field("Password", password), field("Role", role),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add user"))),
    summary);
  const out = h("div", { id: "users" }, loading());
  replace(main, h("h1", null, "Users"), form, h("h2", null, "All users"), out);
  let alive = true;

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(form, null, summary);
    try {
      await api.post("/api/users", { username: username.value.trim(), password: password.value, role: role.value });
      toast(`User ${username.value.trim()} added`);
      username.value = "";
      password.value = "";
      load();
    } catch (exc) {
      showErrors(form, exc, summary);
    }
  });

  async function update(u, patch, done) {
    try {
      await api.put(`/api/users/${u.id}`, patch);
      toast(done);
    } catch (exc) {
      toast(exc.message, "error");
    }
    load();
  }

  function roleSelect(u) {
    const sel = h("select", { "aria-label": `Role of ${u.username}` }, ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)));
    sel.addEventListener("change", () => update(u, { role: sel.value }, `${u.username} is now ${sel.value}`));
    return sel;
  }

  function resetButton(u) {
    return h("button", { type: "button", onclick: () => {
      const pw = h("input", { type: "password", name: "new_password", autocomplete: "new-password" });
      const f = h("form", { class: "row", "aria-label": `New password for ${u.username}` }, field("New password", pw),
        h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Set")));
      f.addEventListener("submit", (ev) => { ev.preventDefault(); update(u, { password: pw.value }, `Password of ${u.username} changed`); });
      const row = out.querySelector(`tr[data-id="${u.id}"] td:last-child`);
      if (row) { row.appendChild(f); pw.focus(); }
    } }, "Reset password");
  }

  async function load() {
    try {
      const body = await api.get("/api/users");
      if (!alive) return;
      const me = getSession();
      const cols = [
        { title: "User", render: (u) => u.username },
        { title: "Role", render: (u) => (u.username === me.username ? u.role : roleSelect(u)) },
        { title: "State", render: (u) => badge(u.is_active === false ? "inactive" : "active") },
        { title: "Last login", opt: true, render: (u) => fmtTime(u.last_login_at) || "never" },
        { title: "Actions", render: (u) => (u.username === me.username ? "you" : h("div", { class: "actions" },
          h("button", { type: "button", onclick: () => update(u, { is_active: u.is_active === false }, `${u.username} ${u.is_active === false ? "enabled" : "disabled"}`) },
            u.is_active === false ? "Enable" : "Disable"),
          resetButton(u),
          dangerButton("Delete", async () => {
            try { await api.del(`/api/users/${u.id}`); toast(`${u.username} deleted`); } catch (exc) { toast(exc.message, "error"); }
            load();
          }))) },
      ];
      replace(out, table(cols, listOf(body, "users"), { caption: "Users" }));
    } catch (exc) {
      if (alive) replace(out, errorBox(exc));
    }
  }
  load();
  return () => { alive = false; };
}
