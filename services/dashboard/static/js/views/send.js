// Send form: client checks mirror the server, but the server's answer wins.
import { api, ApiError } from "../api.js";
import { h, replace, field, showErrors } from "../dom.js";
import { analyze, nonGsmChars } from "../segments.js";
import { listOf } from "../widgets.js";

export const E164 = /^\+[1-9]\d{6,14}$/;

export function counterText(info) {
  return `${info.characters} characters · ${info.encoding} · ${info.segments} segment${info.segments === 1 ? "" : "s"} · ${info.remaining} left in this segment`;
}

export function render(main, ctx) {
  const preset = (ctx.args && ctx.args[0]) || "";
  const recipient = h("input", { name: "recipient", type: "tel", inputmode: "tel", autocomplete: "off", required: true, placeholder: "+4915112345678", value: preset });
  const message = h("textarea", { name: "message", required: true, maxLength: 1600 });
  const counter = h("p", { class: "counterline", id: "sms-counter", "aria-live": "polite" });
  const ucsHint = h("p", { class: "hint", id: "ucs-hint" });
  // One choice: automatic, any SIM of a site (`site`), or one SIM (`sim_card_id`).
  const sim = h("select", { name: "sim_card_id" }, h("option", { value: "" }, "Automatic (best available SIM)"));
  const bySite = h("optgroup", { label: "Any SIM at a site" });
  const bySim = h("optgroup", { label: "This SIM" });
  const priority = h("select", { name: "priority" },
    h("option", { value: "normal" }, "Normal"), h("option", { value: "high" }, "High"));
  const sendAt = h("input", { name: "send_at", type: "datetime-local" });
  const onUnavailable = h("select", { name: "on_unavailable" },
    h("option", { value: "wait" }, "Wait for it"), h("option", { value: "fail" }, "Fail at once"));
  const summary = h("p", { class: "form-error", role: "alert", id: "send-summary" });
  const result = h("div", { id: "send-result", role: "status" });
  const button = h("button", { type: "submit", class: "primary", id: "send-button" }, "Send SMS");
  const form = h("form", { class: "card form-narrow", novalidate: true, "aria-label": "Send an SMS" },
    field("Recipient (international format)", recipient, "E.164: a plus sign, the country code and the number, no spaces."),
    field("Message", message),
    counter, ucsHint,
    h("div", { class: "row" },
      field("SIM", sim),
      field("Priority", priority)),
    h("div", { class: "row" },
      field("Send at (optional, your local time)", sendAt),
      field("If the SIM or site is unavailable", onUnavailable)),
    summary,
    h("div", { class: "actions" }, button));

  replace(main, h("h1", null, "Send an SMS"), form, result);

  function updateCounter() {
    const info = analyze(message.value);
    counter.replaceChildren(
      h("strong", { id: "count-chars" }, String(info.characters)), " characters · ",
      h("strong", { id: "count-encoding" }, info.encoding), " · ",
      h("strong", { id: "count-segments" }, String(info.segments)), info.segments === 1 ? " segment" : " segments", " · ",
      h("strong", { id: "count-remaining" }, String(info.remaining)), " left in this segment");
    const odd = nonGsmChars(message.value);
    ucsHint.textContent = odd.length
      ? `UCS-2 because of: ${odd.slice(0, 8).join(" ")}${odd.length > 8 ? " …" : ""} (70 characters per SMS instead of 160)`
      : "";
  }
  message.addEventListener("input", updateCounter);
  updateCounter();

  // A retry of the same submission reuses the key, so a double click or a
  // lost response never sends twice; an edit makes it a new message.
  let idemKey = null;
  form.addEventListener("input", () => { idemKey = null; });

  api.get("/api/sites").then((b) => {
    listOf(b, "sites").filter((x) => x.active_sims > 0).forEach((x) => {
      bySite.appendChild(h("option", { value: `site:${x.site}` }, `${x.site} · ${x.online} of ${x.modems} modems online`));
    });
    if (bySite.children.length) sim.insertBefore(bySite, sim.children[1] || null);
  }).catch(() => { /* sites are optional */ });
  api.get("/api/sim-cards").then((b) => {
    listOf(b, "sim_cards").forEach((x) => {
      const label = [x.number || `SIM ${x.id}`, x.label, x.status !== "active" ? x.status : null, x.online === false ? "offline" : null]
        .filter(Boolean).join(" · ");
      bySim.appendChild(h("option", { value: String(x.id) }, label));
    });
    sim.appendChild(bySim);
  }).catch(() => { /* automatic routing still works */ });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const local = {};
    const to = recipient.value.replace(/[\s()-]/g, "");
    if (!E164.test(to)) local.recipient = "Enter the number in international format, e.g. +4915112345678.";
    if (!message.value.trim()) local.message = "The message is empty.";
    let when = null;
    if (sendAt.value) {
      const d = new Date(sendAt.value);
      if (Number.isNaN(d.getTime())) local.send_at = "Not a valid date and time.";
      else when = d.toISOString();
    }
    if (Object.keys(local).length) {
      showErrors(form, new ApiError(422, { message: "Please correct the marked fields.", fields: local }), summary);
      form.querySelector("[aria-invalid]")?.focus();
      return;
    }
    showErrors(form, null, summary);
    const payload = { recipient: to, message: message.value, priority: priority.value, on_unavailable: onUnavailable.value };
    if (sim.value.startsWith("site:")) payload.site = sim.value.slice(5);
    else if (sim.value) payload.sim_card_id = Number(sim.value);
    if (when) payload.send_at = when;
    idemKey = idemKey || (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
    button.disabled = true;
    try {
      const res = await api.post("/api/sms", payload, { headers: { "Idempotency-Key": idemKey } });
      idemKey = null;
      replace(result, h("div", { class: "card" },
        h("p", null, `Queued as message #${res.message_id} on ${res.sender_sim || "the chosen SIM"} (${res.encoding}, ${res.segments} segment${res.segments === 1 ? "" : "s"}).`),
        h("a", { href: `#/messages/detail/${encodeURIComponent(res.message_id)}`, id: "sent-link" }, "Follow its delivery")));
      message.value = "";
      updateCounter();
      message.focus();
    } catch (exc) {
      showErrors(form, exc, summary);
      form.querySelector("[aria-invalid]")?.focus();
    } finally {
      button.disabled = false;
    }
  });
  recipient.focus();
  return null;
}
