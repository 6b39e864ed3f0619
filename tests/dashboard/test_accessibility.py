"""Lighthouse-style checks run in the browser on every page: labelled
controls, named buttons and links, one h1, a language, and no HTML built from
strings anywhere in the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import PASSWORDS, login

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parents[2] / "services" / "dashboard" / "static"

AUDIT = """() => {
  const problems = [];
  const name = (el) => (el.getAttribute('aria-label') || el.textContent || el.title || '').trim();
  document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach((el) => {
    const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
  });
  document.querySelectorAll('button, a[href]').forEach((el) => {
    if (!name(el)) problems.push('nameless ' + el.outerHTML.slice(0, 80));
  });
  document.querySelectorAll('svg[role=img]').forEach((el) => {
    if (!el.getAttribute('aria-label')) problems.push('svg without a label');
  });
  const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
  const dup = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dup.length) problems.push('duplicate ids ' + [...new Set(dup)].join(','));
  if (document.querySelectorAll('h1').length !== 1) problems.push(document.querySelectorAll('h1').length + ' h1');
  if (!document.documentElement.lang) problems.push('no lang');
  return problems;
}"""

PAGES = [
    "overview",
    "send",
    "messages/outbox",
    "messages/inbox",
    "messages/conversations",
    "sims",
    "stats",
    "logs",
    "keys",
    "webhooks",
    "users",
    "nodes",
]


def test_every_page_passes_the_basic_accessibility_audit(page, personas, modem):
    page.goto("/")
    assert page.evaluate(AUDIT) == []
    login(page, "alice", PASSWORDS["alice"])
    for path in PAGES:
        page.goto(f"/#/{path}")
        page.wait_for_load_state("networkidle")
        page.wait_for_function(
            "() => !document.querySelector('#main [role=status].empty')"
            " || document.querySelector('#main table, #main .card')"
        )
        assert page.evaluate(AUDIT) == [], path


def test_no_code_builds_html_from_strings():
    offenders = []
    for f in STATIC.rglob("*.js"):
        text = f.read_text()
        for needle in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            if needle in text:
                offenders.append(f"{f.relative_to(STATIC)}: {needle}")
    assert offenders == []
    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and " style=" not in html and "onload=" not in html
