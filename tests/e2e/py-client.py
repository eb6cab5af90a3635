#!/usr/bin/env python3
"""End-to-end client: the official Python MCP SDK (`mcp`, pinned in requirements.txt) against
`warden demo`, with the SDK's httpx2 `OAuthClientProvider` doing the OAuth flow itself:
401 -> protected resource metadata -> authorization server metadata (issuer checked against
`authorization_servers[0]`) -> dynamic registration (or the pre-registered client) -> PKCE S256
authorization code -> token.

    py-client.py URL [dcr|preregistered]      (default: dcr)

The redirect_handler "is the browser": it GETs the authorize URL, signs in as john.mcclane on
the HTML form, approves the consent page and reads code/state/iss from the final 302's Location
(nothing listens on the callback port); the callback_handler hands them back to the SDK.

Env: E2E_TOKEN_FILE  append the raw access token here (the runner greps the server log for it
                     and deletes the file); stdout only ever shows its SHA-256.
     E2E_PROFILE     `demo` (default: the demo's ledger and directory tools, as john) or `echo`
                     (tests/e2e/replicas.sh: testkit's echo-upstream under the namespace `up_`;
                     lists its five tools and calls up_echo)
     E2E_USERNAME, E2E_PASSWORD  who signs in (default john.mcclane / the demo's password)
     E2E_FEDERATE    a connector id (tests/idp): sign in through that upstream IdP instead of
                     the password form; E2E_USERNAME is then the IdP's login (any password)
Prints one JSON summary line on stdout; exits non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import sys
import traceback
from html.parser import HTMLParser
from importlib.metadata import version
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

PROFILE = os.environ.get("E2E_PROFILE") or "demo"
USERNAME = os.environ.get("E2E_USERNAME") or "john.mcclane@orchestrator.lab"
PASSWORD = os.environ.get("E2E_PASSWORD") or "yippiekayay"
FEDERATE = os.environ.get("E2E_FEDERATE") or ""
# john is not in the compliance group: the seed's policy hides getCustomerPII and getAuditLog.
DEMO_TOOLS = sorted(
    [f"enterprise_ledger_{t}" for t in ("listAccounts", "getAccount", "getTransactions", "updateAccountStatus")]
    + [
        f"employee_directory_{t}"
        for t in (
            "listEmployees",
            "createEmployee",
            "getEmployee",
            "updateEmployee",
            "deactivateEmployee",
            "listDirectReports",
            "listDepartments",
        )
    ]
)
EXPECTED_ACCOUNTS = [f"ACC-{n}" for n in range(1001, 1009)]
# testkit's echo-upstream behind the namespace `up_`.
ECHO_TOOLS = ["up_cut", "up_echo", "up_slow", "up_ticks", "up_whoami"]
EXPECTED_TOOLS = ECHO_TOOLS if PROFILE == "echo" else DEMO_TOOLS

summary: dict = {"client": "python-sdk", "sdk": version("mcp"), "steps": []}


def step(s: str) -> None:
    summary["steps"].append(s)
    print(f"[py-client {summary.get('mode')}] {s}", file=sys.stderr, flush=True)


def check(cond: object, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


# --- the "browser" ----------------------------------------------------------------------------


class FormParser(HTMLParser):
    """The first <form>: action, method, hidden inputs, input names, buttons; and <li><code> scopes."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.hidden: dict[str, str] = {}
        self.fields: list[str] = []
        self.buttons: list[tuple[str | None, str | None]] = []
        self.codes: list[str] = []
        self._in_form = False
        self._done = False
        self._in_code = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and not self._done and self.action is None:
            self._in_form = True
            self.action = a.get("action") or ""
            self.method = (a.get("method") or "get").lower()
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields.append(a["name"])
            if (a.get("type") or "text").lower() == "hidden":
                self.hidden[a["name"]] = a.get("value") or ""
        elif tag == "button" and self._in_form:
            self.buttons.append((a.get("name"), a.get("value")))
        elif tag == "code":
            self._in_code = True

    def handle_endtag(self, tag):
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True
        elif tag == "code":
            self._in_code = False

    def handle_data(self, data):
        if self._in_code:
            self.codes.append(data)


def parse_form(html: str) -> FormParser:
    p = FormParser()
    p.feed(html)
    check(p.action is not None, f"no <form> in page: {html[:500]}")
    return p


async def federate(ua: httpx2.AsyncClient, html: str, base: str):
    """The login page's form for connector FEDERATE -> the IdP's own login and consent pages ->
    back at Warden's consent page; returns that response and its URL."""
    chunk = next(
        (f for f in re.findall(r"<form\b[^>]*>.*?</form>", html, re.S | re.I) if f'name="connector" value="{FEDERATE}"' in f),
        None,
    )
    check(chunk, f"login page offers connector {FEDERATE}: {html[:800]}")
    f = parse_form(chunk)
    step(f"browser: sign in with connector {FEDERATE}")
    url = urljoin(base, f.action)
    r = await ua.post(url, data=f.hidden)
    for _ in range(20):
        if 300 <= r.status_code < 400:
            url = urljoin(url, r.headers["location"])
            r = await ua.get(url)
            continue
        check(r.status_code == 200, f"{url}: HTTP {r.status_code}: {r.text[:300]}")
        if 'action="/consent"' in r.text:
            return r, url
        form = parse_form(r.text)
        body = dict(form.hidden)
        target = urljoin(url, form.action)
        if "login" in form.fields:
            step(f"idp: login form at {target}")
            body.update(login=USERNAME, password="any-password")
        else:
            step(f"idp: consent form at {target}")
        url = target
        r = await ua.request(form.method.upper(), url, data=body)
    raise AssertionError("federated sign-in: too many redirects")


class Browser:
    def __init__(self) -> None:
        self.result: AuthorizationCodeResult | None = None
        self.authorize_params: dict[str, str] = {}

    async def redirect_handler(self, authorization_url: str) -> None:
        q = {k: v[0] for k, v in parse_qs(urlparse(authorization_url).query).items()}
        self.authorize_params = {
            k: q.get(k, "") for k in ("client_id", "redirect_uri", "scope", "resource", "code_challenge_method")
        }
        check(q.get("code_challenge_method") == "S256", "SDK sends PKCE S256")
        check(q.get("code_challenge"), "SDK sends a code_challenge")
        step(
            f"redirect_handler {authorization_url.split('?')[0]} client_id={q.get('client_id')} "
            f'scope="{q.get("scope")}" resource={q.get("resource")}'
        )
        # A plain user agent: cookies kept, redirects not followed (we read the final Location).
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as ua:
            r = await ua.get(authorization_url, headers={"accept": "text/html"})
            check(r.status_code == 200, f"GET /authorize: HTTP {r.status_code}: {r.text[:300]}")
            if FEDERATE:
                r, login_url = await federate(ua, r.text, authorization_url)
            else:
                login = parse_form(r.text)
                check(login.method == "post", "login form posts")
                check({"username", "password"} <= set(login.fields), f"login form has username/password: {login.fields}")
                login_url = urljoin(authorization_url, login.action)
                step(f"browser: login form at {urlparse(login_url).path}")

                r = await ua.post(login_url, data={**login.hidden, "username": USERNAME, "password": PASSWORD})
                check(r.status_code == 200, f"POST {login_url}: HTTP {r.status_code}: {r.text[:300]}")
            consent = parse_form(r.text)
            approve = next(((n, v) for n, v in consent.buttons if v == "approve" and n), None)
            check(approve, f"consent page has an approve button: {consent.buttons}")
            step(f"browser: signed in; consent for scopes [{' '.join(consent.codes[1:])}]")

            consent_url = urljoin(login_url, consent.action)
            r = await ua.post(consent_url, data={**consent.hidden, approve[0]: approve[1]})
            location = r.headers.get("location")
            check(r.status_code == 302 and location, f"POST {consent_url}: expected 302 with Location, got {r.status_code}")
        back = urlparse(location)
        check(
            f"{back.scheme}://{back.netloc}{back.path}" == q.get("redirect_uri"),
            f"redirected to {location.split('?')[0]}, expected {q.get('redirect_uri')}",
        )
        p = {k: v[0] for k, v in parse_qs(back.query).items()}
        check("error" not in p, f"authorization error: {p.get('error')} {p.get('error_description')}")
        check(p.get("code"), "code in redirect")
        step(f"browser: 302 -> {location.split('?')[0]}?code=…&state=…&iss={p.get('iss')}")
        self.result = AuthorizationCodeResult(code=p["code"], state=p.get("state"), iss=p.get("iss"))

    async def callback_handler(self) -> AuthorizationCodeResult:
        check(self.result is not None, "redirect handler produced a code")
        r, self.result = self.result, None
        return r


# --- storage and HTTP recording ---------------------------------------------------------------


class MemoryStorage(TokenStorage):
    def __init__(self, client_info: OAuthClientInformationFull | None = None) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info = client_info
        self.registered: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.registered = client_info
        self.client_info = client_info


class RecordingTransport(httpx2.AsyncBaseTransport):
    """Every request the SDK sends (MCP, discovery, registration, token) and its status."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.seen: list[dict] = []

    async def handle_async_request(self, request):
        response = await self.inner.handle_async_request(request)
        self.seen.append(
            {
                "method": request.method,
                "url": str(request.url),
                "status": response.status_code,
                "auth": "authorization" in request.headers,
                "www": response.headers.get("www-authenticate"),
            }
        )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(url: str, mode: str) -> None:
    cimd_url = os.environ.get("E2E_CIMD_URL") if mode == "cimd" else None
    if mode == "dcr":
        redirect_uri = f"http://localhost:{free_port()}/callback"
        storage = MemoryStorage()
    elif mode == "cimd":
        check(cimd_url, "E2E_CIMD_URL is set")
        redirect_uri = "http://localhost:19876/callback"
        storage = MemoryStorage()
    else:
        redirect_uri = "http://localhost:19876/callback"
        storage = MemoryStorage(OAuthClientInformationFull(client_id="mcp-client-cli", redirect_uris=[redirect_uri]))
    browser = Browser()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="Warden e2e (Python SDK)",
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        client_metadata_url=cimd_url,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    rec = RecordingTransport()
    mcp_path = urlparse(url).path
    async with httpx2.AsyncClient(auth=provider, transport=rec, timeout=httpx2.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            # The OAuth flow ran inside the first MCP request: check what went over the wire.
            mcp = [x for x in rec.seen if urlparse(x["url"]).path == mcp_path]
            check(mcp and mcp[0]["status"] == 401 and not mcp[0]["auth"], f"first MCP request: 401 without a token: {mcp[:1]}")
            www = mcp[0]["www"] or ""
            check(www.startswith("Bearer ") and 'resource_metadata="' in www, f"401 Bearer challenge: {www}")
            step(f"401 from {mcp_path}: WWW-Authenticate: {www}")
            disc = [f"{x['status']} {urlparse(x['url']).path}" for x in rec.seen if "/.well-known/" in x["url"]]
            step(f"discovery: {', '.join(disc)}")
            check(any(d.startswith("200 /.well-known/oauth-protected-resource") for d in disc), "PRM fetched")
            check(
                any(d.startswith(("200 /.well-known/oauth-authorization-server", "200 /.well-known/openid-configuration")) for d in disc),
                "authorization server metadata fetched",
            )
            regs = [x for x in rec.seen if x["method"] == "POST" and urlparse(x["url"]).path == "/register"]
            if mode == "dcr":
                check(storage.registered and len(regs) == 1 and regs[0]["status"] == 201, f"registered dynamically: {regs}")
                step(f"registered dynamically: client_id={storage.registered.client_id}")
            else:
                check(not regs, "no dynamic registration for the pre-registered or CIMD client")
            if mode == "cimd":
                check(browser.authorize_params.get("client_id") == cimd_url, f"client_id is the document URL: {browser.authorize_params}")
                step(f"client id metadata document: client_id={cimd_url}")
            tok = [x for x in rec.seen if x["method"] == "POST" and urlparse(x["url"]).path == "/token"]
            check(len(tok) == 1 and tok[0]["status"] == 200, f"one token request -> 200: {tok}")
            check(any(x["status"] == 200 and x["auth"] for x in mcp[1:]), "an authorized MCP request succeeded")
            t = storage.tokens
            check(t and t.access_token, "access token stored")
            summary["issuer"] = str(provider.context.oauth_metadata.issuer) if provider.context.oauth_metadata else None
            summary["authorization_servers_0"] = provider.context.auth_server_url
            summary["client_id"] = browser.authorize_params.get("client_id")
            summary["scope_requested"] = browser.authorize_params.get("scope")
            summary["scope_granted"] = t.scope
            summary["resource"] = browser.authorize_params.get("resource") or None
            summary["access_token_sha256"] = hashlib.sha256(t.access_token.encode()).hexdigest()
            if os.environ.get("E2E_TOKEN_FILE"):
                fd = os.open(os.environ["E2E_TOKEN_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as f:
                    f.write(t.access_token + "\n")
            step(f'token: sha256={summary["access_token_sha256"]} scope="{t.scope}" expires_in={t.expires_in}')
            info = client.server_info
            summary["server"] = {"name": info.name, "version": info.version} if info else None
            summary["protocol_version"] = client.protocol_version
            step(f"connected: {summary['server']} protocol {client.protocol_version}")

            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            summary["tools"] = names
            check(names == EXPECTED_TOOLS, f"tools/list: {names}")

            if PROFILE == "echo":
                # tools/call up_echo, a few times (behind a round-robin balancer: on every replica).
                summary["echoes"] = 0
                for i in range(4):
                    args = {"from": "py-sdk", "mode": mode, "i": i}
                    res = await client.call_tool("up_echo", args)
                    check(not res.is_error, f"up_echo isError: {res.content}")
                    check(res.structured_content == args, f"up_echo echoes its arguments: {res.structured_content}")
                    summary["echoes"] += 1
                step(f"up_echo: {summary['echoes']} calls echoed their arguments")
                return

            res = await client.call_tool("enterprise_ledger_listAccounts", {})
            check(not res.is_error, f"listAccounts isError: {res.content}")
            data = res.structured_content
            if data is None:
                text = next((c.text for c in res.content if getattr(c, "type", None) == "text"), None)
                data = json.loads(text) if text else {}
            ids = sorted(a.get("accountId") for a in data.get("accounts", []))
            summary["accounts"] = ids
            check(data.get("count") == 8, f"count 8 (got {data.get('count')})")
            check(ids == EXPECTED_ACCOUNTS, f"account ids: {ids}")
            step(f"listAccounts: {len(ids)} accounts")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) > 2 or (len(args) == 2 and args[1] not in ("dcr", "preregistered", "cimd")) or PROFILE not in ("demo", "echo"):
        print("usage: py-client.py URL [dcr|preregistered]", file=sys.stderr)
        sys.exit(2)
    summary["url"] = args[0]
    summary["mode"] = args[1] if len(args) == 2 else "dcr"
    summary["profile"] = PROFILE
    code = 0
    try:
        asyncio.run(main(summary["url"], summary["mode"]))
        summary["ok"] = True
    except BaseException as e:  # noqa: BLE001 - report anything (incl. ExceptionGroup) as a failure
        summary["ok"] = False
        summary["error"] = "".join(traceback.format_exception(e))
        code = 1
    print(json.dumps(summary), flush=True)
    sys.exit(code)
