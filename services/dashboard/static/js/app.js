// Shell: login, navigation by role, hash routing, the live connection.
import { api, can, endSession, getSession, loadSession, login, onSessionEnd, onSessionRenewed, ApiError } from "./api.js";
import { h, replace, showErrors, field, toast } from "./dom.js";
import { FeedWatch } from "./feed.js";
import { Socket } from "./socket.js";

const root = document.getElementById("app");
let socket = null;
let feed = null;
let cleanup = null;
let liveEl = null;
let bannerEl = null;

// Each page loads on first visit: the first paint only needs the shell.
const ROUTES = [
  { path: "overview", title: "Overview", load: () => import("./views/overview.js") },
  { path: "send", title: "Send", load: () => import("./views/send.js"), when: can.send },
  { path: "messages", title: "Messages", load: () => import("./views/messages.js") },
  { path: "sims", title: "SIMs & modems", load: () => import("./views/sims.js") },
  { path: "stats", title: "Statistics", load: () => import("./views/stats.js") },
  { path: "logs", title: "Logs", load: () => import("./views/logs.js") },
  { path: "keys", title: "API keys", load: () => import("./views/keys.js") },
  { path: "webhooks", title: "Webhooks", load: () => import("./views/webhooks.js"), when: can.send },
  { path: "users", title: "Users", load: () => import("./views/users.js"), when: can.admin },
  { path: "nodes", title: "Edge nodes", load: () => import("./views/nodes.js"), when: can.admin },
  { path: "account", title: "Account", load: () => import("./views/account.js") },
];

function visibleRoutes() {
  return ROUTES.filter((r) => !r.when || r.when());
}

function renderLogin(notice) {
  stopLive();
  const user = h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none" });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const summary = h("p", { class: "form-error", role: "alert" }, notice || "");
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "SMS Gateway"),
    field("Username", user),
    field("Password", pass),
    summary,
    button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    showErrors(form, null, summary);
    try {
      await login(user.value.trim(), pass.value);
      pass.value = "";
      if (!location.hash || location.hash === "#/login") location.hash = "#/overview";
      renderShell();
    } catch (exc) {
      showErrors(form, exc instanceof ApiError ? exc : new ApiError(0, { message: String(exc) }), summary);
      pass.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(root, h("main", { id: "main", class: "login-wrap" }, form));
  root.removeAttribute("aria-busy");
  document.title = "Sign in · SMS Gateway";
  user.focus();
  markInteractive("login");
}

// Read by bench/dashboard_load.py: the moment the page first answers input.
function markInteractive(what) {
  if (!performance.getEntriesByName(`smsgw-interactive-${what}`).length) {
    performance.mark(`smsgw-interactive-${what}`);
  }
}

function stopLive() {
  if (cleanup) { try { cleanup(); } catch { /* view already gone */ } cleanup = null; }
  if (feed) { feed.stop(); feed = null; }
  if (socket) { socket.stop(); socket = null; }
}

// The header pill and the banner say the same thing: whether changes are
// arriving now (feed.js), not merely whether a socket is open.
function drawLive() {
  if (!liveEl || !socket) return;
  const interrupted = feed && feed.state === "interrupted";
  const state = socket.state === "online" && interrupted ? "interrupted" : socket.state;
  const label = { online: "Live", connecting: "Connecting…", offline: "Offline, retrying", denied: "Live updates refused", interrupted: "Interrupted" }[state] || state;
  liveEl.textContent = label;
  liveEl.dataset.state = state;
  if (bannerEl) bannerEl.hidden = !interrupted || socket.state === "denied";
}

function startLive() {
  socket = new Socket(() => {
    const s = getSession();
    return s ? { token: s.token } : {};
  });
  feed = new FeedWatch(socket);
  socket.on("_state", drawLive);
  socket.on("_feed", drawLive);
  socket.on("connect_error", async () => {
    // Usually an expired token: asking the API ends the session on a 401.
    try { await api.get("/api/me"); } catch { /* handled by the 401 hook */ }
  });
  socket.on("mqtt_status", (data) => {
    const el = document.getElementById("mqtt-state");
    if (el && data) {
      el.textContent = data.connected ? "MQTT connected" : "MQTT disconnected";
      el.dataset.state = data.connected ? "online" : "offline";
    }
  });
  socket.start();
  feed.start();
}

function renderShell() {
  const session = getSession();
  liveEl = h("span", { class: "live", id: "live-state", "data-state": "connecting", role: "status" }, "Connecting…");
  const nav = h("nav", { class: "nav", "aria-label": "Main" },
    h("ul", null, visibleRoutes().map((r) => h("li", null,
      h("a", { href: `#/${r.path}`, "data-route": r.path }, r.title)))));
  const menu = h("button", { type: "button", class: "menu-toggle", "aria-expanded": "false", "aria-controls": "nav" }, "Menu");
  nav.id = "nav";
  menu.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    menu.setAttribute("aria-expanded", String(open));
  });
  nav.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) {
      nav.classList.remove("open");
      menu.setAttribute("aria-expanded", "false");
    }
  });
  const logout = h("button", { type: "button", class: "link", id: "logout" }, "Sign out");
  logout.addEventListener("click", () => {
    endSession("logout");
  });
  const header = h("header", { class: "topbar" },
    menu,
    h("a", { class: "brand", href: "#/overview" }, "SMS Gateway"),
    h("span", { class: "spacer" }),
    liveEl,
    h("span", { class: "mqtt", id: "mqtt-state" }, ""),
    h("span", { class: "who" }, h("span", { id: "who-name" }, session.username), " ",
      h("span", { class: "role", id: "who-role" }, session.role)),
    logout);
  bannerEl = h("div", { class: "feed-banner", id: "feed-banner", role: "alert", hidden: true },
    h("strong", null, "Live feed interrupted."),
    " Changes are not arriving; this page refreshes from the server as soon as the feed returns.");
  const main = h("main", { id: "main", class: "main", tabindex: "-1" });
  replace(root, header, bannerEl, h("div", { class: "layout" }, nav, main));
  root.removeAttribute("aria-busy");
  startLive();
  scheduleExpiry(session);
  route();
}

let expiryTimer = null;
function scheduleExpiry(session) {
  clearTimeout(expiryTimer);
  const left = session.expires_at ? Date.parse(session.expires_at) - Date.now() : NaN;
  // setTimeout overflows past ~24 days; a 401 covers anything longer.
  if (Number.isFinite(left) && left < 2 ** 31 - 1) {
    expiryTimer = setTimeout(() => endSession("expired"), Math.max(0, left));
  }
}

let routeSeq = 0;
async function route() {
  const session = getSession();
  if (!session) return renderLogin();
  const main = document.getElementById("main");
  if (!main) return renderShell();
  const [, name = "overview", ...rest] = (location.hash || "#/overview").split("/");
  const r = visibleRoutes().find((x) => x.path === name);
  if (cleanup) { try { cleanup(); } catch { /* ignore */ } cleanup = null; }
  document.querySelectorAll("[data-route]").forEach((a) => {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (!r) {
    replace(main, h("h1", null, "Not available"), h("p", null, "This page does not exist or your role cannot use it."));
    return;
  }
  const seq = ++routeSeq;
  document.title = `${r.title} · SMS Gateway`;
  try {
    const mod = await r.load();
    if (seq !== routeSeq) return;
    replace(main);
    main.dataset.view = r.path;
    cleanup = mod.render(main, { socket, session, args: rest.map(decodeURIComponent) }) || null;
    markInteractive("app");
  } catch (exc) {
    if (seq !== routeSeq) return;
    replace(main, h("p", { class: "form-error", role: "alert" }, `This page failed to load: ${exc.message || exc}`));
  }
}

onSessionEnd((reason) => {
  clearTimeout(expiryTimer);
  const notice = reason === "expired" ? "Your session has expired. Please sign in again." : "";
  if (reason === "expired") toast(notice, "error");
  renderLogin(notice);
});

// A new token for this tab (a password change): its own expiry from now on;
// the live socket takes it when it reconnects (its auth reads the session).
onSessionRenewed(scheduleExpiry);

window.addEventListener("hashchange", () => {
  route();
  const main = document.getElementById("main");
  if (main && main.classList.contains("main")) main.focus({ preventScroll: true });
});

if (loadSession()) {
  renderShell();
} else {
  renderLogin();
}
