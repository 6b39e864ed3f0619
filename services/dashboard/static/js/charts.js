// Hand-drawn SVG charts: no library, no inline styles, text as text nodes.
import { h, s } from "./dom.js";

const W = 520;
const H = 220;
const PAD = { l: 44, r: 10, t: 10, b: 26 };
const COLORS = ["#1c5d99", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490"];
function label(x) {
  if (typeof x === "string" && /^\d{4}-\d{2}-\d{2}$/.test(x)) return x.slice(5);
  const d = new Date(x);
  if (typeof x === "number" || Number.isNaN(d.getTime())) return String(x);
  const hm = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
  return hm === "00:00" ? d.toLocaleDateString(undefined, { month: "2-digit", day: "2-digit" }) : hm;
}

// 1, 2 or 5 times a power of ten: axis labels people can read.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((k) => k * p).find((c) => c >= v);
}

function frame(title, maxY, unit) {
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, preserveAspectRatio: "xMidYMid meet" }, s("title", null, title));
  [0, 0.5, 1].forEach((f) => {
    const y = PAD.t + (H - PAD.t - PAD.b) * (1 - f);
    svg.appendChild(s("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: y, y2: y }));
    svg.appendChild(s("text", { x: PAD.l - 4, y: y + 4, "text-anchor": "end" }, `${+(maxY * f).toFixed(maxY * f < 1 ? 1 : 0)}${unit || ""}`));
  });
  return svg;
}

function legend(series) {
  if (series.length < 2) return null;
  return h("div", { class: "legend" }, series.map((x, i) => {
    const el = h("span", null, x.name);
    el.style.setProperty("--c", COLORS[i % COLORS.length]);
    return el;
  }));
}

function wrap(title, svg, series, table) {
  // The same figures as a table for screen readers.
  return h("figure", { class: "card" }, h("figcaption", null, h("strong", null, title)), svg, legend(series), table);
}

function dataTable(title, series) {
  const xs = [...new Set(series.flatMap((x) => x.points.map((p) => String(p[0]))))];
  return h("table", { class: "sr-only" }, h("caption", null, title),
    h("tr", null, h("th", null, "x"), series.map((x) => h("th", null, x.name))),
    xs.slice(-60).map((x) => h("tr", null, h("td", null, label(x)), series.map((ser) => {
      const p = ser.points.find((q) => String(q[0]) === x);
      return h("td", null, p && p[1] !== null ? String(p[1]) : "");
    }))));
}

export function lineChart(title, series, unit = "") {
  series = series.filter((x) => x.points.some((p) => p[1] !== null));
  if (!series.length) return h("figure", { class: "card" }, h("figcaption", null, h("strong", null, title)), h("p", { class: "empty" }, "No data yet."));
  const xs = [...new Set(series.flatMap((x) => x.points.map((p) => String(p[0]))))].sort();
  const maxY = niceMax(Math.max(...series.flatMap((x) => x.points.map((p) => p[1] ?? 0))));
  const svg = frame(title, maxY, unit);
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const xAt = (x) => PAD.l + (xs.length < 2 ? iw / 2 : (xs.indexOf(String(x)) / (xs.length - 1)) * iw);
  const yAt = (y) => PAD.t + ih * (1 - y / maxY);
  series.forEach((ser, i) => {
    const pts = ser.points.filter((p) => p[1] !== null).map((p) => `${xAt(p[0]).toFixed(1)},${yAt(p[1]).toFixed(1)}`);
    const line = s("polyline", { class: "line", points: pts.join(" ") });
    line.style.stroke = COLORS[i % COLORS.length];
    svg.appendChild(line);
  });
  [0, xs.length - 1].filter((v, i, a) => a.indexOf(v) === i).forEach((i) => {
    svg.appendChild(s("text", { x: xAt(xs[i]), y: H - 6, "text-anchor": i ? "end" : "start" }, label(xs[i])));
  });
  return wrap(title, svg, series, dataTable(title, series));
}

export function barChart(title, series, opts = {}) {
  const unit = opts.unit || "";
  series = series.filter((x) => x.points.length);
  if (!series.length) return h("figure", { class: "card" }, h("figcaption", null, h("strong", null, title)), h("p", { class: "empty" }, "No data yet."));
  let xs = [...new Set(series.flatMap((x) => x.points.map((p) => String(p[0]))))];
  if (opts.sort !== false) xs = xs.sort().slice(-31);
  const maxY = niceMax(Math.max(...series.flatMap((x) => x.points.map((p) => p[1] ?? 0))));
  const svg = frame(title, maxY, unit);
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const slot = iw / xs.length;
  const bw = Math.max(2, (slot * 0.8) / series.length);
  series.forEach((ser, si) => {
    ser.points.forEach(([x, y]) => {
      const i = xs.indexOf(String(x));
      if (i < 0 || y === null) return;
      const bh = (y / maxY) * ih;
      const r = s("rect", { class: "bar", x: PAD.l + i * slot + slot * 0.1 + si * bw, y: PAD.t + ih - bh, width: bw, height: bh },
        s("title", null, `${label(x)} · ${ser.name}: ${y}`));
      r.style.fill = COLORS[si % COLORS.length];
      svg.appendChild(r);
    });
  });
  const step = Math.ceil(xs.length / 6);
  xs.forEach((x, i) => {
    if (i % step === 0) svg.appendChild(s("text", { x: PAD.l + i * slot + slot / 2, y: H - 6, "text-anchor": "middle" }, label(x)));
  });
  return wrap(title, svg, series, dataTable(title, series));
}
