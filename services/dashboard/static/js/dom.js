// DOM building without HTML parsing: every string becomes a text node or a
// property, so data from the API can never turn into markup or script.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    child.forEach((c) => append(el, c));
  } else if (child instanceof Node) {
    el.appendChild(child);
  } else {
    el.appendChild(document.createTextNode(String(child)));
  }
}

function setProps(el, props, svg) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.setAttribute("class", value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style") {
      // CSSOM, not a style attribute: allowed under the CSP.
      Object.assign(el.style, value);
    } else if (!svg && key in el && typeof value !== "string" && key !== "list") {
      el[key] = value;
    } else if (!svg && (key === "value" || key === "checked" || key === "disabled")) {
      el[key] = value;
    } else {
      if (/^on/i.test(key)) throw new Error("event handler attributes are not allowed");
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props, false);
  append(el, children);
  return el;
}

export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props, true);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export function fmtTime(value) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${units[i]}`;
}

export function badge(state) {
  const text = String(state ?? "unknown");
  return h("span", { class: `badge badge-${text.replace(/[^a-z_-]/gi, "")}` }, text);
}

// A labelled form field; `error` holds the API's message for this field.
let fieldSeq = 0;
export function field(label, control, hint) {
  fieldSeq += 1;
  const id = control.id || `f${fieldSeq}`;
  control.id = id;
  const error = h("p", { class: "field-error", id: `${id}-err`, role: "alert" });
  const describedBy = [`${id}-err`];
  let hintEl = null;
  if (hint) {
    hintEl = h("p", { class: "hint", id: `${id}-hint` }, hint);
    describedBy.push(`${id}-hint`);
  }
  control.setAttribute("aria-describedby", describedBy.join(" "));
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl, error);
  wrap.dataset.field = control.name || "";
  return wrap;
}

// Show an API error next to the fields it names, and the rest in `summary`.
export function showErrors(form, err, summary) {
  form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  if (!err) {
    if (summary) summary.textContent = "";
    return;
  }
  const fields = (err && err.fields) || {};
  const unplaced = [];
  for (const [name, msg] of Object.entries(fields)) {
    const control = form.querySelector(`[name="${CSS.escape(name)}"]`);
    const slot = control && form.querySelector(`#${CSS.escape(control.id)}-err`);
    if (slot) {
      slot.textContent = String(msg);
      control.setAttribute("aria-invalid", "true");
    } else {
      unplaced.push(`${name}: ${msg}`);
    }
  }
  if (summary) {
    const parts = [err.message || String(err)].concat(unplaced);
    summary.textContent = parts.join(" · ");
  }
}

export function toast(text, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  box.appendChild(t);
  setTimeout(() => t.remove(), 5000);
}

// Destructive actions ask twice on the button itself: no modal dialogs, so a
// dialog appearing in a test can only mean something unexpected ran.
export function dangerButton(label, action, props = {}) {
  const btn = h("button", { type: "button", class: "danger", ...props }, label);
  const name = btn.getAttribute("aria-label");
  let armed = false;
  let timer = null;
  const arm = (on) => {
    armed = on;
    btn.textContent = on ? `Confirm: ${label}` : label;
    if (name) btn.setAttribute("aria-label", on ? `Confirm: ${name}` : name);
  };
  btn.addEventListener("click", async () => {
    if (!armed) {
      arm(true);
      btn.setAttribute("aria-live", "polite");
      timer = setTimeout(() => arm(false), 5000);
      return;
    }
    clearTimeout(timer);
    arm(false);
    btn.disabled = true;
    try { await action(); } finally { btn.disabled = false; }
  });
  return btn;
}
