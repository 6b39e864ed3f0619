"""First-load weight and time to interactive of the dashboard.

Debian's nginx serves services/dashboard with the project's config on a
127.0.0.1 port; Debian's Chromium (Playwright) loads it with a cold cache.

    .venv/bin/python bench/dashboard_load.py               # the sign-in page
    .venv/bin/python bench/dashboard_load.py --api 127.0.0.1:5001 \
        --username alice --password-file pw.txt             # also the overview after sign-in

Bytes are what went over the wire (Chrome's encodedDataLength: compressed
bodies plus headers). Time to interactive is the `smsgw-interactive-*`
performance mark the app sets once its first view accepts input, measured from
navigation start. Budget (issue 5): < 300 KB and < 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "dashboard"))
from devserver import NginxProcess, free_port  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BUDGET_BYTES = 300 * 1024
BUDGET_MS = 1000


def measure(browser, url: str, mark: str, login: tuple[str, str] | None = None) -> dict:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    sizes: dict[str, int] = {}
    urls: dict[str, str] = {}
    cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    cdp.on("Network.webSocketFrameReceived", lambda e: None)
    try:
        if login:
            page.goto(url)
            page.wait_for_function("() => performance.getEntriesByName('smsgw-interactive-login').length > 0")
            page.fill("input[name=username]", login[0])
            page.fill("input[name=password]", login[1])
            page.click("button[type=submit]")
            page.wait_for_selector("#who-name")
            page.wait_for_load_state("networkidle")
            # A reload with the session in sessionStorage is the operator's
            # everyday first load: the shell, the overview and its API calls.
            sizes.clear()
            urls.clear()
            page.reload()
        else:
            page.goto(url)
        page.wait_for_function(f"() => performance.getEntriesByName('{mark}').length > 0", timeout=10000)
        page.wait_for_load_state("networkidle")
        tti = page.evaluate(f"() => performance.getEntriesByName('{mark}')[0].startTime")
        dcl = page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
        total = sum(sizes.values())
        by_kind: dict[str, int] = {}
        for rid, n in sizes.items():
            u = urls.get(rid, "")
            path = u.split("#", 1)[0].split("?", 1)[0]
            last = path.rsplit("/", 1)[-1]
            kind = (
                "api"
                if "/api/" in path
                else "socket.io"
                if "/socket.io/" in path
                else last.rsplit(".", 1)[-1]
                if "." in last
                else "html"
            )
            by_kind[kind] = by_kind.get(kind, 0) + n
            if os.environ.get("DEBUG_URLS"):
                print(f"  {n:7d} {u}")
        return {"bytes": total, "requests": len(sizes), "tti_ms": tti, "dcl_ms": dcl, "by_kind": by_kind}
    finally:
        context.close()


def report(name: str, runs: list[dict]) -> bool:
    b = statistics.median(r["bytes"] for r in runs)
    t = statistics.median(r["tti_ms"] for r in runs)
    worst_t = max(r["tti_ms"] for r in runs)
    kinds = ", ".join(f"{k} {v / 1024:.1f} KB" for k, v in sorted(runs[0]["by_kind"].items()))
    ok = b < BUDGET_BYTES and worst_t < BUDGET_MS
    print(
        f"{name}: {b / 1024:.1f} KB transferred in {runs[0]['requests']} requests ({kinds}); "
        f"time to interactive median {t:.0f} ms, worst {worst_t:.0f} ms of {len(runs)} cold loads; "
        f"DOMContentLoaded median {statistics.median(r['dcl_ms'] for r in runs):.0f} ms "
        f"[{'within' if ok else 'OVER'} budget: 300 KB, 1000 ms]"
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description="Dashboard first-load benchmark")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--api", help="host:port of a running API (enables the signed-in measurement)")
    ap.add_argument("--username")
    ap.add_argument("--password-file")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    if not 1 <= args.runs <= 50:
        ap.error("--runs must be between 1 and 50")
    from playwright.sync_api import sync_playwright

    api = args.api or f"127.0.0.1:{free_port()}"  # nothing listens: the sign-in page needs no API
    ok = True
    with NginxProcess(api) as nginx, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            measure(browser, nginx.url + "/", "smsgw-interactive-login")  # warm nginx and the OS page cache
            runs = [measure(browser, nginx.url + "/", "smsgw-interactive-login") for _ in range(args.runs)]
            ok &= report("sign-in page (first visit)", runs)
            if args.api and args.username and args.password_file:
                password = Path(args.password_file).read_text().strip()
                runs = [
                    measure(browser, nginx.url + "/#/overview", "smsgw-interactive-app", (args.username, password))
                    for _ in range(args.runs)
                ]
                ok &= report("overview, signed in (shell + overview + its API calls)", runs)
        finally:
            browser.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
