"""Browser checks of the Saturn Gantt view in a running Airflow (used by test_browser.py and by hand).

`login` signs in through Airflow's own login form; `gantt_bars` reads the bars of the chart inside the
plugin's iframe through the DOM (the iframe is same-origin), so the test sees what a user sees.
"""

from __future__ import annotations

import json
import time

from browser import Browser

IFRAME_DOC = "(() => { const f = document.querySelector('iframe'); return f && f.contentDocument; })()"


def login(b: Browser, base_url: str, user: str, password: str, timeout_s: float = 90) -> None:
    b.navigate(base_url.rstrip("/") + "/")
    b.wait_for("!!document.querySelector('input[name=password]')", timeout_s, "the login form")
    b.evaluate("document.querySelector('input[name=username]').focus()")
    b.type_text(user)
    b.evaluate("document.querySelector('input[name=password]').focus()")
    b.type_text(password)
    b.evaluate("document.querySelector('button[type=submit]').click()")
    b.wait_for("!location.pathname.startsWith('/auth/login')", timeout_s, "the login to finish")
    names = [c["name"] for c in b.send("Network.getCookies")["cookies"]]
    assert "_token" in names, f"no _token cookie after login (cookies: {names})"


def open_plugin_page(b: Browser, url: str, timeout_s: float = 90) -> dict:
    """Open a UI page that embeds the plugin (nav page or DAG tab); wait for its chart or plan list."""
    b.navigate(url)
    b.wait_for(f"(() => {{ const d = {IFRAME_DOC}; return !!d && d.readyState === 'complete' && "
               "!!d.querySelector('svg.gantt, table.jobs, .empty'); })()", timeout_s, f"the plugin page in {url}")
    time.sleep(0.5)  # let the UI finish its layout before a screenshot
    return {"iframe_src": b.evaluate("document.querySelector('iframe').src"),
            "title": b.evaluate(f"{IFRAME_DOC}.title")}


def gantt_bars(b: Browser) -> list[dict]:
    """Every bar of the chart in the iframe: plan, job, node, GPU lane, kind and state."""
    js = f"""JSON.stringify([...{IFRAME_DOC}.querySelectorAll('svg.gantt g.bar')].map(g => {{
        const lane = [...g.ownerDocument.querySelectorAll(
            `svg.gantt[data-plan="${{g.dataset.plan}}"] g.lane`)].find(l => {{
                const r = l.querySelector('rect').getBoundingClientRect(), s = g.querySelector('rect').getBoundingClientRect();
                return s.top >= r.top - 0.5 && s.bottom <= r.bottom + 0.5; }});
        return {{plan: g.dataset.plan, job: g.dataset.job, node: g.dataset.node, gpu: +g.dataset.gpu,
                kind: g.classList.contains('planned') ? 'planned' : 'actual', state: g.dataset.state || null,
                lane: lane ? [lane.dataset.node, +lane.dataset.gpu] : null,
                width: g.querySelector('rect').getBoundingClientRect().width}}; }}))"""
    return json.loads(b.evaluate(js))


def leaderboard_rows(b: Browser) -> dict:
    """The leaderboard table in the iframe (job, rank, state, winner, shown) and, per metric chart, its jobs."""
    js = f"""JSON.stringify((() => {{ const d = {IFRAME_DOC};
        const rows = [...d.querySelectorAll('section.results table.leaderboard tbody tr')].map(tr => ({{
            job: tr.dataset.job, rank: tr.dataset.rank, state: tr.dataset.state, winner: tr.dataset.winner === 'true',
            visible: tr.getBoundingClientRect().height > 0}}));
        const curves = {{}};
        d.querySelectorAll('section.results svg.curves').forEach(svg => {{
            curves[svg.dataset.metric] = [...svg.querySelectorAll('polyline.curve')].map(l => l.dataset.job).sort(); }});
        return {{rows, curves}}; }})())"""
    return json.loads(b.evaluate(js))
