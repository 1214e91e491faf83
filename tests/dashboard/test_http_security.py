"""The node's HTTP side against the web: real `curvechat serve` processes and
a real headless Chromium.

- other origins cannot read it (no CORS), even with the right token;
- the bearer token: made once (0600), printed with the dashboard URL, needed
  for `/api/*` and `/metrics` off loopback (or with --http-require-token),
  never for `/healthz` and `/readyz`; `--metrics-open` opens `/metrics` only;
- the Host header must name the node (DNS rebinding gets 421);
- every answer carries the security headers, and the page works under its
  CSP with no violation and cannot be framed;
- text from clients (a hostile client name) is shown as text, with the same
  placeholders as the terminal front ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import zmq
import zmq.asyncio

from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.protocol.text import visible

if TYPE_CHECKING:
    from .conftest import Chromium, OtherOrigin
from support.servers import ServerProcess, free_port

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
HOSTILE_CLIENT = '<img src=x onerror="document.title=1">\x1b[2J\x1b]52;c;SGk=\x07\u202eevil\r\n'


@contextlib.contextmanager
def node(tmp_path: Path, name: str, *args: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / name, extra_args=args).start()
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, proc.log()[-3000:]
        assert "Traceback" not in proc.log(), proc.log()[-3000:]


def token_of(proc: ServerProcess) -> str:
    return (proc.data / "http.token").read_text().strip()


async def get(
    url: str, *, token: str | None = None, host: str | None = None
) -> tuple[int, dict[str, str], str]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if host is not None:
        headers["Host"] = host
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


# --- the token ---------------------------------------------------------------------------


async def test_token_required_off_loopback_and_with_the_flag(tmp_path: Path) -> None:
    """Bound to a wildcard (anything but loopback), /api/* and /metrics
    answer 401 without the token and 200 with it; the token is made once
    (0600) and printed with the dashboard URL; health checks stay open."""
    port = free_port()
    with node(tmp_path, "wild", "--http", f"0.0.0.0:{port}") as proc:
        base = f"http://127.0.0.1:{port}"
        for path in ("/api/state", "/api/nodes", "/metrics", "/api/peers/x/state"):
            status, headers, body = await get(base + path)
            assert status == 401, (path, status, body)
            assert headers["WWW-Authenticate"] == 'Bearer realm="curvechat"'
            assert json.loads(body)["error"] == "unauthorized"
        token = token_of(proc)
        assert len(token) >= 40
        assert (proc.data / "http.token").stat().st_mode & 0o777 == 0o600
        assert f"dashboard: http://127.0.0.1:{port}/#token={token}\n" in proc.stdout
        for path in ("/api/state", "/metrics"):
            assert (await get(base + path, token=token[:-1] + "x"))[0] == 401
            assert (await get(base + path, token=token.upper()))[0] == 401
        status, _, body = await get(base + "/api/state", token=token)
        assert status == 200 and json.loads(body)["node"]["name"]
        assert (await get(base + "/metrics", token=token))[0] == 200
        for path in ("/healthz", "/readyz", "/", "/static/dashboard.js"):
            assert (await get(base + path))[0] == 200, path  # open: no data in them
        # a query-string token is not a token (it would end up in logs)
        assert (await get(f"{base}/api/state?token={token}"))[0] == 401

    # On loopback the token is needed only with --http-require-token; it is
    # the same token as before (reused), and --metrics-open opens /metrics only.
    with node(tmp_path, "wild", "--http-require-token", "--metrics-open") as proc:
        assert token_of(proc) == token
        base = f"http://127.0.0.1:{proc.http_port}"
        assert (await get(base + "/api/state"))[0] == 401
        assert (await get(base + "/api/state", token=token))[0] == 200
        assert (await get(base + "/metrics"))[0] == 200
        assert (await get(base + "/healthz"))[0] == 200
        assert f"dashboard: http://127.0.0.1:{proc.http_port}/#token={token}\n" in proc.stdout


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    shared = tmp_path / "shared.token"
    shared.write_text("a" * 43 + "\n")
    shared.chmod(0o644)
    command = [sys.executable, "-m", "curvechat", "serve", "--data", str(data)]
    command += ["--bind", f"tcp://127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{free_port()}"]
    proc = subprocess.run(
        [*command, "--http-token-file", str(shared)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode != 0
    assert f"{shared} is readable by others (mode 644); chmod 600 it" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- Host ----------------------------------------------------------------------------------


async def test_host_header_must_name_the_node(tmp_path: Path, server: ServerProcess) -> None:
    base, port = f"http://127.0.0.1:{server.http_port}", server.http_port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "10.1.2.3"):
        for path in ("/", "/api/state", "/healthz", "/metrics"):
            status, headers, body = await get(base + path, host=host)
            assert status == 421, (host, path, status)
            assert "does not answer to the host name" in body and "--http-host" in body
            assert headers["X-Frame-Options"] == "DENY"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert (await get(base + "/api/state", host=host))[0] == 200, host
    assert "refused a request for host 'evil.example'" in server.log()

    # Names given with --http-host (any case, with or without a final dot)
    with node(tmp_path, "n", "--http-host", "chat.test", "--http-host", "Ops.Example.") as proc:
        base, port = f"http://127.0.0.1:{proc.http_port}", proc.http_port
        for host in (f"chat.test:{port}", "ops.example", "OPS.EXAMPLE."):
            assert (await get(base + "/api/state", host=host))[0] == 200, host
        assert (await get(base + "/api/state", host="evil.example"))[0] == 421

    # Bound to a wildcard the node is any of the machine's addresses: any IP
    # address is allowed (no rebinding uses one), names still are not.
    port = free_port()
    with node(tmp_path, "w", "--http", f"0.0.0.0:{port}") as proc:
        base, token = f"http://127.0.0.1:{port}", token_of(proc)
        assert (await get(base + "/api/state", token=token, host="10.1.2.3:80"))[0] == 200
        assert (await get(base + "/api/state", token=token, host="evil.example"))[0] == 421


async def test_dns_rebinding_in_chromium(server: ServerProcess, browser: Chromium) -> None:
    """Opened under a name that resolves to the node (rebind.test, as a DNS
    rebinding attacker's page would be), the node answers 421 to the page and
    to its fetches; under localhost, the dashboard works."""
    page = await browser.new_page()
    await page.goto(f"http://rebind.test:{server.http_port}/")
    await page.wait_for(
        "document.body && document.body.innerText.includes('421 Misdirected')",
        what="the 421 page",
    )
    fetched = await page.evaluate(
        "fetch('/api/state').then(r => r.status + ' ' + r.headers.get('content-type'))"
    )
    assert fetched == "421 text/plain; charset=utf-8"

    await page.goto(f"http://localhost:{server.http_port}/")
    await page.wait_for(
        "document.getElementById('overall').innerText.startsWith('healthy')",
        what="the dashboard under an allowed name",
    )


# --- CORS ----------------------------------------------------------------------------------


async def test_other_origins_cannot_read_the_api(
    server: ServerProcess, browser: Chromium, other_origin: OtherOrigin
) -> None:
    """A page of another origin (another loopback port) cannot read
    /api/state: not on a loopback node that needs no token, and not even
    with the right token; the node's own page can."""
    api = f"http://127.0.0.1:{server.http_port}/api/state"
    page = await browser.new_page()
    await page.goto(other_origin.url)
    await page.wait_for("document.title === 'elsewhere'", what="the other origin's page")
    attempt = """fetch({url!r}, {{{options}}}).then(
            async (r) => 'read ' + r.status + ' ' + (await r.text()).slice(0, 40),
            (e) => 'blocked: ' + e.name)"""
    plain = await page.evaluate(attempt.format(url=api, options=""))
    assert plain == "blocked: TypeError", plain
    assert "has been blocked by CORS policy" in "\n".join(page.console())
    # what a plain cross-origin GET gets: no CORS header at all
    status, headers, _ = await get(api)
    assert status == 200
    assert not any(h.lower().startswith("access-control-") for h in headers)
    # with the right token (a preflight, which gets no CORS header either)
    bearer = f"headers: {{Authorization: 'Bearer {token_of(server)}'}}"
    with_token = await page.evaluate(attempt.format(url=api, options=bearer))
    assert with_token == "blocked: TypeError", with_token
    # no-cors (what <script src> or <img> would do): refused by
    # Cross-Origin-Resource-Policy, not even an opaque answer
    opaque = await page.evaluate(attempt.format(url=api, options="mode: 'no-cors'"))
    assert opaque == "blocked: TypeError", opaque

    # the node's own page reads it (same origin)
    own = await browser.new_page()
    await own.goto(f"http://127.0.0.1:{server.http_port}/")
    await own.wait_for("document.body.dataset.polls >= 1", what="the dashboard polling")
    assert await own.evaluate("fetch('api/state').then((r) => r.status)") == 200


# --- headers, CSP, framing -------------------------------------------------------------------


async def test_security_headers_and_csp(
    server: ServerProcess, browser: Chromium, other_origin: OtherOrigin
) -> None:
    """Every answer carries the headers; the page has no inline script,
    style or handler, runs under its CSP without a single violation, and
    another site cannot frame it."""
    base = f"http://127.0.0.1:{server.http_port}"
    for path, status in (
        ("/", 200),
        ("/static/dashboard.js", 200),
        ("/api/state", 200),
        ("/healthz", 200),
        ("/static/nowhere.js", 404),
    ):
        got, headers, _ = await get(base + path)
        assert got == status, path
        assert headers.get("Content-Security-Policy") == CSP, path
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
    _, _, html = await get(base + "/")
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)  # no inline handlers

    page = await browser.new_page()
    await page.call(
        "Page.addScriptToEvaluateOnNewDocument",
        source="window.__violations = [];"
        " document.addEventListener('securitypolicyviolation',"
        " (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));",
    )
    await page.goto(base + "/")
    await page.wait_for(
        "document.getElementById('overall').innerText.startsWith('healthy')"
        " && document.querySelector('#chart-process').dataset.points >= 2"
        " && document.querySelector('.legend .sw')",
        what="the dashboard drawn",
    )
    assert await page.evaluate("window.__violations") == []
    console = "\n".join(page.console())
    assert "Content Security Policy" not in console and "exception" not in console, console

    framer = await browser.new_page()
    await framer.goto(other_origin.url)
    await framer.wait_for("document.title === 'elsewhere'", what="the other origin's page")
    await framer.evaluate(
        f"const f = document.createElement('iframe'); f.src = {base + '/'!r};"
        " document.body.append(f); true"
    )
    async with asyncio.timeout(10):
        while not any("frame-ancestors 'none'" in line for line in framer.console()):
            await asyncio.sleep(0.1)


# --- the token in the page -------------------------------------------------------------------


async def test_the_page_asks_for_the_token_or_takes_it_from_the_url(
    tmp_path: Path, browser: Chromium
) -> None:
    with node(tmp_path, "n", "--http-require-token") as proc:
        base = f"http://127.0.0.1:{proc.http_port}"
        token = token_of(proc)
        # Without the token the page asks for it.
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.wait_for(
            "!document.getElementById('token-form').hidden"
            " && document.getElementById('overall').innerText === 'access token required'",
            what="the token form",
        )
        # Typed in, it opens the dashboard.
        await page.evaluate(
            f"document.getElementById('token-input').value = {token!r};"
            " document.querySelector('#token-form button').click(); true"
        )
        await page.wait_for(
            "document.getElementById('overall').innerText.startsWith('healthy')"
            " && document.getElementById('token-form').hidden",
            what="the dashboard after the token was typed in",
        )

        # The printed URL: the token moves from the fragment (which no server
        # sees) to this tab's sessionStorage, and out of the address bar.
        link = next(line for line in proc.stdout if line.startswith("dashboard: "))
        assert link == f"dashboard: {base}/#token={token}\n"
        fresh = await browser.new_page()
        await fresh.goto(link.split(": ", 1)[1].strip())
        await fresh.wait_for(
            "document.getElementById('overall').innerText.startsWith('healthy')",
            what="the dashboard opened from the printed URL",
        )
        assert await fresh.evaluate("location.href") == base + "/"
        assert await fresh.evaluate("sessionStorage.getItem('curvechat.http-token')") == token
        console = "\n".join(fresh.console())
        assert token not in console and "exception" not in console, console


# --- hostile text ----------------------------------------------------------------------------


async def test_hostile_client_name_is_shown_as_text(
    server: ServerProcess, browser: Chromium
) -> None:
    """A client that says its name is markup and terminal escapes: the
    dashboard shows it as text, with the terminal front ends' placeholders."""
    address = parse_connect(server.connect)[0]
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_serverkey = address.server_key.encode()
    sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.linger = 0
    sock.connect(address.endpoint)
    try:
        await sock.send(encode_request(1, m.Hello(client=HOSTILE_CLIENT)))
        async with asyncio.timeout(10):
            assert isinstance(decode_server_frame(await sock.recv()).msg, m.Welcome)
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.http_port}/")
        await page.wait_for(
            "document.querySelector('#connections td.client')", what="the client's row"
        )
        shown = await page.evaluate("document.querySelector('#connections td.client').textContent")
        assert shown == visible(HOSTILE_CLIENT)
        assert "\\x1b[2J" in shown and "\\u202eevil" in shown and "<img" in shown
        assert await page.evaluate("document.querySelectorAll('#connections img').length") == 0
        assert await page.evaluate("document.title") == "curvechat · monitor"
    finally:
        sock.close()
        ctx.term()

    # The page's rules are the terminal's (curvechat.protocol.text), string by string.
    corpus = [
        "plain",
        "\x1b[2J",
        "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
        "cr\rover\nline",
        "\u202eevil\u2066x\u2069",
        "a\u200db",
        "\u200d",
        "x\u200b\ufeff\u00ad",
        "\U0001f469\u200d\U0001f4bb",
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
        "\U000e0041\U000e0042",
        "\x85\x9b\x7f\t",
        "\u2028\u2029",
    ]
    got = await page.evaluate(f"JSON.parse({json.dumps(json.dumps(corpus))}).map(visible)")
    assert got == [visible(text) for text in corpus]


async def test_the_error_of_fetching_a_hostile_node_is_shown_as_text(browser: Chromium) -> None:
    """A node of the registry that answers as another node names itself in
    the error this node's page shows in its "down" footer: that text came
    straight into the footer, so a node could put bidi and terminal escapes
    there."""
    from aiohttp import web

    from curvechat.dashboard.routes import NODE_HEADER

    from .test_peer_proxy import TOKEN, Site

    hostile = "\u202eevil\x1b[2J <b>x</b>"

    async def state(_request: web.Request) -> web.Response:
        return web.json_response({}, headers={NODE_HEADER: quote(hostile, safe="")})

    liar = web.Application()
    liar.router.add_get("/api/state", state)
    runner = web.AppRunner(liar, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    a = Site("a", TOKEN, [{"name": "b", "url": f"http://127.0.0.1:{port}/"}])
    await a.start()
    try:
        page = await browser.new_page()
        await page.goto(f"{a.url}#token={TOKEN}")
        down = 'document.querySelector(\'.card.node[data-node="b"][data-up="false"] .node-foot\')'
        await page.wait_for(down, what="b's card, down")
        foot = await page.evaluate(f"{down}.textContent")
        assert visible(hostile) in foot and "\u202e" not in foot and "\x1b" not in foot
    finally:
        await a.runner.cleanup()
        await runner.cleanup()
