// Small pieces several pages share.
import { h, s, fmtTime, badge } from "./dom.js";

// +CSQ rssi index 0..31 (99 unknown) as 0..4 bars.
export function signalBars(quality) {
  const q = Number(quality);
  const known = Number.isFinite(q) && q !== 99 && q >= 0;
  const bars = !known ? 0 : q >= 20 ? 4 : q >= 15 ? 3 : q >= 10 ? 2 : q >= 2 ? 1 : 0;
  const label = known ? `Signal ${bars} of 4 (CSQ ${q})` : "Signal unknown";
  return s("svg", { class: "bars", width: 26, height: 16, viewBox: "0 0 26 16", role: "img", "aria-label": label },
    s("title", null, label),
    [0, 1, 2, 3].map((i) => s("rect", {
      x: i * 7, y: 12 - i * 4, width: 5, height: 4 + i * 4, rx: 1, class: i < bars ? "on" : "",
    })));
}

export function onlineBadge(online) {
  return badge(online ? "online" : "offline");
}

export function pager(pagination, page, onPage) {
  const per = (pagination && pagination.per_page) || 50;
  const total = pagination ? pagination.total : null;
  const pages = total === null || total === undefined ? null : Math.max(1, Math.ceil(total / per));
  // Without a total (the server skips counting costly searches) `has_more` says
  // whether another page exists.
  const hasNext = pages === null ? !!(pagination && (pagination.has_more || pagination.next_before_id)) : page < pages;
  const prev = h("button", { type: "button", disabled: page <= 1, onclick: () => onPage(page - 1) }, "← Previous");
  const next = h("button", { type: "button", disabled: !hasNext, onclick: () => onPage(page + 1) }, "Next →");
  const info = pages === null ? `Page ${page}` : `Page ${page} of ${pages} · ${total} in all`;
  return h("nav", { class: "pager", "aria-label": "Pages" }, prev, h("span", { role: "status" }, info), next);
}

export function table(columns, rows, opts = {}) {
  const head = h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.opt ? "opt" : "" }, c.title))));
  const body = h("tbody");
  rows.forEach((row) => body.appendChild(tableRow(columns, row, opts)));
  const t = h("table", null, opts.caption ? h("caption", { class: "sr-only" }, opts.caption) : null, head, body);
  if (!rows.length) {
    body.appendChild(h("tr", null, h("td", { colSpan: columns.length, class: "empty" }, opts.empty || "Nothing here yet.")));
  }
  return h("div", { class: "table-wrap" }, t);
}

export function tableRow(columns, row, opts = {}) {
  const tr = h("tr", null, columns.map((c) => {
    const v = c.render ? c.render(row) : row[c.key];
    return h("td", { class: [c.cls || "", c.opt ? "opt" : ""].join(" ").trim() }, v ?? "");
  }));
  if (row.id !== undefined) tr.dataset.id = String(row.id);
  if (opts.onOpen) {
    tr.classList.add("clickable");
    tr.addEventListener("click", (ev) => {
      if (!ev.target.closest("button, a, input")) opts.onOpen(row);
    });
  }
  return tr;
}

export function timeCell(v) {
  return v ? h("time", { datetime: String(v) }, fmtTime(v)) : "";
}

// The counterpart of a message: who we talk to.
export function peerOf(m) {
  return m.direction === "inbound" ? m.sender : m.recipient;
}

// Lists from the API keep the seed's key; tolerate a bare array too.
export function listOf(body, key) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body[key])) return body[key];
  return [];
}

export function loading() {
  return h("p", { class: "empty", role: "status" }, "Loading…");
}

export function errorBox(exc) {
  return h("p", { class: "form-error", role: "alert" }, String((exc && exc.message) || exc));
}

// A secret shown once: "Copy" puts `text` on the clipboard, or, without
// clipboard permission, selects `shown` so that Ctrl+C works.
export function copyButton(text, shown, props = {}) {
  const copy = h("button", { type: "button", ...props }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(shown);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      copy.textContent = "Selected: press Ctrl+C";
    }
  });
  return copy;
}
