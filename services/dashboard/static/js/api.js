// REST client. The JWT lives in memory and in sessionStorage (this tab only,
// gone when the tab closes); see services/dashboard/README.md for why.

const KEY = "smsgw.session";
let session = null;
const listeners = new Set();
const renewListeners = new Set();

export class ApiError extends Error {
  constructor(status, body) {
    const msg = (body && (body.message || body.error)) || `HTTP ${status}`;
    super(String(msg));
    this.status = status;
    this.code = body && body.code;
    this.fields = (body && typeof body.fields === "object" && body.fields) || {};
  }
}

export function loadSession() {
  try {
    const raw = sessionStorage.getItem(KEY);
    const saved = raw ? JSON.parse(raw) : null;
    if (saved && saved.token && (!saved.expires_at || Date.parse(saved.expires_at) > Date.now())) {
      session = saved;
    } else {
      sessionStorage.removeItem(KEY);
    }
  } catch {
    session = null;
  }
  return session;
}

export function getSession() {
  return session;
}

export function onSessionEnd(fn) {
  listeners.add(fn);
}

export function onSessionRenewed(fn) {
  renewListeners.add(fn);
}

export function endSession(reason) {
  const had = session !== null;
  session = null;
  try { sessionStorage.removeItem(KEY); } catch { /* storage disabled */ }
  if (had) listeners.forEach((fn) => fn(reason));
}

export async function login(username, password) {
  const body = await request("POST", "/api/auth", { username, password }, { anonymous: true });
  // The login response also carries a freshly rotated API key: the dashboard
  // never needs it, so it is dropped rather than stored anywhere.
  session = {
    token: body.token,
    username: body.username,
    role: body.role,
    expires_at: body.expires_at || null,
  };
  try { sessionStorage.setItem(KEY, JSON.stringify(session)); } catch { /* memory only */ }
  return session;
}

// A password change ends every session, this one too, and answers with a new
// token for this tab: kept, or the next request (and the live socket, which
// the API drops within a second) would find the old one refused.
export function renewSession(token, expiresAt) {
  if (!session || !token) return;
  session = { ...session, token, expires_at: expiresAt || null };
  try { sessionStorage.setItem(KEY, JSON.stringify(session)); } catch { /* memory only */ }
  renewListeners.forEach((fn) => fn(session));
}

export async function request(method, path, data, opts = {}) {
  const headers = { Accept: "application/json" };
  if (!opts.anonymous && session) headers.Authorization = `Bearer ${session.token}`;
  if (data !== undefined) headers["Content-Type"] = "application/json";
  Object.assign(headers, opts.headers || {});
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: data === undefined ? undefined : JSON.stringify(data),
      credentials: "same-origin",
      cache: "no-store",
      signal: opts.signal,
    });
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw new ApiError(0, { message: "The gateway cannot be reached. Check the connection." });
  }
  let body = null;
  const type = res.headers.get("Content-Type") || "";
  if (type.includes("application/json")) {
    try { body = await res.json(); } catch { body = null; }
  }
  if (res.status === 401 && !opts.anonymous) {
    endSession("expired");
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body || {};
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") u.set(k, v);
  }
  const q = u.toString();
  return q ? `?${q}` : "";
}

export const api = {
  get: (p, params, opts) => request("GET", p + qs(params), undefined, opts),
  post: (p, d, opts) => request("POST", p, d === undefined ? {} : d, opts),
  put: (p, d) => request("PUT", p, d),
  del: (p) => request("DELETE", p),
};

export const can = {
  send: () => !!session && (session.role === "user" || session.role === "admin"),
  admin: () => !!session && session.role === "admin",
};
