// The signed-in user's own account: change the password, see the own API
// keys, sign out everywhere (POST /api/me/sessions/end).
import { api, endSession, getSession, renewSession } from "../api.js";
import { h, replace, field, showErrors, toast, dangerButton, fmtTime, badge } from "../dom.js";
import { table, listOf, loading, errorBox } from "../widgets.js";

// POST /api/auth names the key it hands out with each login so.

export function render(main) {
  const session = getSession();
  const current = h("input", { name: "current_password", type: "password", autocomplete: "current-password", required: true });
  const fresh = h("input", { name: "new_password", type: "password", autocomplete: "new-password", required: true });
  const again = h("input", { name: "new_password_again", type: "password", autocomplete: "new-password", required: true });
  const summary = h("p", { class: "form-error", role: "alert" });
  const pwForm = h("form", { class: "card form-narrow", id: "password-form", "aria-labelledby": "pw-title", novalidate: true },
    h("h2", { id: "pw-title", style: { marginTop: 0 } }, "Change your password"),
    field("Current password", current),
    field("New password", fresh, "At least 12 characters; a few words are easier to remember than symbols."),
    field("New password again", again),
    summary,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Change password")));
  const keysOut = h("div", { id: "my-keys" }, loading());
  const everywhere = dangerButton("Sign out everywhere", signOutEverywhere, { id: "sign-out-everywhere" });
  replace(main,
    h("h1", null, "Account"),
    h("p", null, "Signed in as ", h("strong", { id: "account-name" }, session.username), " (", session.role, ")."),
    pwForm,
    h("h2", null, "Your API keys"),
    h("p", { class: "hint" }, "Each sign-in creates a key named \u201clogin\u201d; keys you created for clients are on the API keys page."),
    keysOut,
    h("h2", null, "Sign out everywhere"),
    h("p", { class: "hint" }, "Ends every sign-in of yours, on every device, this one too. "
      + "Keys you created for clients keep working."),
    h("div", { class: "actions" }, everywhere));
  let alive = true;

  pwForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(pwForm, null, summary);
    if (fresh.value !== again.value) {
      showErrors(pwForm, { message: "The new passwords differ.", fields: { new_password_again: "Type the same new password twice." } }, summary);
      again.focus();
      return;
    }
    try {
      const changed = await api.put("/api/me/password", { current_password: current.value, new_password: fresh.value });
      renewSession(changed.token, changed.expires_at);
      current.value = fresh.value = again.value = "";
      toast("Password changed");
      summary.textContent = "";
      pwForm.querySelector("button[type=submit]").focus();
    } catch (exc) {
      showErrors(pwForm, exc, summary);
    }
  });

  async function myKeys() {
    return listOf(await api.get("/api/api-keys"), "api_keys").filter((k) => !k.revoked_at);
  }

  async function load() {
    try {
      const keys = await myKeys();
      if (!alive) return;
      const cols = [
        { title: "Name", render: (k) => k.name },
        { title: "Prefix", render: (k) => h("code", null, k.prefix || "") },
        { title: "Created", opt: true, render: (k) => fmtTime(k.created_at) },
        { title: "Last used", opt: true, render: (k) => fmtTime(k.last_used_at) || "never" },
        { title: "State", render: (k) => badge(k.active === false ? "expired" : "active") },
      ];
      replace(keysOut, table(cols, keys, { caption: "Your API keys", empty: "You have no active key." }));
    } catch (exc) {
      if (alive) replace(keysOut, errorBox(exc));
    }
  }

  async function signOutEverywhere() {
    try {
      await api.post("/api/me/sessions/end", {});
      toast("Signed out everywhere");
      endSession("logout");
    } catch (exc) {
      toast(exc.message, "error");
    }
  }

  load();
  return () => { alive = false; };
}
