// What is wrong with the modems and what to do, exactly as GET /api/modems
// says it: the Overview and the SIMs & modems page show this one list, so
// they can never disagree.
import { h } from "./dom.js";

export function problemsOf(body) {
  const out = [];
  if (body && body.guidance) out.push({ modem: null, ...body.guidance });
  const modems = (body && Array.isArray(body.modems)) ? body.modems : [];
  modems.forEach((m) => (m.problems || []).forEach((p) => out.push({ modem: String(m.modem_id ?? m.id), ...p })));
  return out;
}

export function problemList(body) {
  const problems = problemsOf(body);
  if (!problems.length) {
    return h("section", { class: "problems ok", id: "problems", "aria-label": "Problems" },
      h("p", { class: "empty" }, "No problem: every modem is online and ready to send."));
  }
  return h("section", { class: "problems", id: "problems", "aria-label": "Problems" },
    h("h2", null, problems.length === 1 ? "1 problem" : `${problems.length} problems`),
    h("ul", null, problems.map((p) => h("li", { class: "card problem", "data-code": p.code, "data-modem": p.modem || "" },
      h("p", null, p.modem ? h("strong", null, `Modem ${p.modem}: `) : null, h("span", { class: "error-text" }, p.problem)),
      h("p", { class: "fix" }, h("strong", null, "What to do: "), p.fix),
      p.detail ? h("p", { class: "hint" }, `The modem said: ${p.detail}`) : null))));
}
