#!/usr/bin/env node
// End-to-end client: the official TypeScript MCP SDK (@modelcontextprotocol/sdk, pinned in
// package-lock.json) against `warden demo`, with the SDK doing the whole OAuth flow itself:
// 401 -> protected resource metadata -> authorization server metadata -> (dynamic
// registration | pre-registered client) -> PKCE S256 authorization code -> token.
//
//   node ts-client.mjs dcr URL            dynamic client registration (loopback redirect)
//   node ts-client.mjs preregistered URL  the demo's public client `mcp-client-cli`
//   node ts-client.mjs cimd URL           client id = E2E_CIMD_URL, a Client ID Metadata Document
//                                         (tests/idp serves it over https; redirect below)
//
// This process "is the browser": redirectToAuthorization() GETs the authorize URL, signs in as
// john.mcclane on the HTML form, approves the consent page and reads the code from the final
// 302's Location (nothing listens on the callback port).
//
// Env: E2E_TOKEN_FILE  append the raw access token here (the runner greps the server log for it
//                      and deletes the file); stdout only ever shows its SHA-256.
//      E2E_PROFILE     `demo` (default: the demo's ledger and directory tools, as john) or `echo`
//                      (tests/e2e/replicas.sh: testkit's echo-upstream under the namespace `up_`;
//                      lists its five tools and calls up_echo)
//      E2E_USERNAME, E2E_PASSWORD  who signs in (default john.mcclane / the demo's password)
//      E2E_FEDERATE    a connector id (tests/idp): sign in through that upstream IdP instead of
//                      the password form; E2E_USERNAME is then the IdP's login (any password)
// Prints one JSON summary line on stdout; exits non-zero on any failure.
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const PROFILE = process.env.E2E_PROFILE || 'demo';
const USERNAME = process.env.E2E_USERNAME || 'john.mcclane@orchestrator.lab';
const PASSWORD = process.env.E2E_PASSWORD || 'yippiekayay';
const FEDERATE = process.env.E2E_FEDERATE || '';
// john is not in the compliance group: the seed's policy hides getCustomerPII and
// getAuditLog from him. The Employee Directory (REST, bridged) adds seven tools.
const DEMO_TOOLS = [
  'employee_directory_createEmployee',
  'employee_directory_deactivateEmployee',
  'employee_directory_getEmployee',
  'employee_directory_listDepartments',
  'employee_directory_listDirectReports',
  'employee_directory_listEmployees',
  'employee_directory_updateEmployee',
  'enterprise_ledger_getAccount',
  'enterprise_ledger_getTransactions',
  'enterprise_ledger_listAccounts',
  'enterprise_ledger_updateAccountStatus',
];
// testkit's echo-upstream behind the namespace `up_`.
const ECHO_TOOLS = ['up_cut', 'up_echo', 'up_slow', 'up_ticks', 'up_whoami'];
const EXPECTED_TOOLS = PROFILE === 'echo' ? ECHO_TOOLS : DEMO_TOOLS;
const EXPECTED_ACCOUNTS = ['ACC-1001', 'ACC-1002', 'ACC-1003', 'ACC-1004', 'ACC-1005', 'ACC-1006', 'ACC-1007', 'ACC-1008'];

const [mode, url] = process.argv.slice(2);
const CIMD_URL = process.env.E2E_CIMD_URL || '';
if (!['dcr', 'preregistered', 'cimd'].includes(mode) || (mode === 'cimd' && !CIMD_URL) || !url || !['demo', 'echo'].includes(PROFILE)) {
  console.error('usage: ts-client.mjs dcr|preregistered URL');
  process.exit(2);
}

const summary = { client: 'typescript-sdk', sdk: null, mode, profile: PROFILE, url, steps: [] };
const step = (s) => {
  summary.steps.push(s);
  console.error(`[ts-client ${mode}] ${s}`);
};
function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

// --- the "browser" -----------------------------------------------------------------------------

function htmlUnescape(s) {
  return s
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}="([^"]*)"`, 'i'));
  return m ? htmlUnescape(m[1]) : undefined;
}

/** The first <form>: its action and the hidden inputs plus the names of the visible ones. */
function parseForm(html, baseUrl) {
  const form = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i);
  if (!form) throw new Error(`no <form> in page: ${html.slice(0, 500)}`);
  const formTag = form[0].match(/<form\b[^>]*>/i)[0];
  const action = new URL(attr(formTag, 'action') ?? '', baseUrl);
  const method = (attr(formTag, 'method') ?? 'get').toLowerCase();
  const hidden = {};
  const fields = [];
  for (const [tag] of form[1].matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(tag, 'name');
    if (!name) continue;
    fields.push(name);
    if ((attr(tag, 'type') ?? 'text').toLowerCase() === 'hidden') hidden[name] = attr(tag, 'value') ?? '';
  }
  const buttons = [...form[1].matchAll(/<button\b[^>]*>/gi)].map(([t]) => ({ name: attr(t, 'name'), value: attr(t, 'value') }));
  return { action, method, hidden, fields, buttons };
}

class Browser {
  cookies = new Map();

  cookieHeader() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  remember(res) {
    const set = typeof res.headers.getSetCookie === 'function' ? res.headers.getSetCookie() : [];
    for (const c of set) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      if (i > 0) this.cookies.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
    }
  }

  async request(method, target, body) {
    const headers = { accept: 'text/html' };
    if (this.cookies.size) headers.cookie = this.cookieHeader();
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(target, { method, headers, body, redirect: 'manual' });
    this.remember(res);
    return res;
  }

  /** Authorize -> login -> consent; returns the redirect URL (with code, state, iss). */
  async authorize(authorizationUrl) {
    let res = await this.request('GET', authorizationUrl);
    let html = await res.text();
    assert(res.status === 200, `GET /authorize: HTTP ${res.status}: ${html.slice(0, 300)}`);
    if (FEDERATE) {
      const page = await this.federate(html, authorizationUrl);
      return this.consent(page.html, page.url);
    }
    const login = parseForm(html, authorizationUrl);
    assert(login.method === 'post', 'login form posts');
    assert(login.fields.includes('username') && login.fields.includes('password'), `login form has username/password: ${login.fields}`);
    step(`browser: login form at ${login.action.pathname}`);

    res = await this.request('POST', login.action, new URLSearchParams({ ...login.hidden, username: USERNAME, password: PASSWORD }).toString());
    html = await res.text();
    assert(res.status === 200, `POST ${login.action.pathname}: HTTP ${res.status}: ${html.slice(0, 300)}`);
    return this.consent(html, login.action);
  }

  /** The login page's form for connector FEDERATE -> the IdP's own login and consent pages ->
   * back at Warden's consent page; returns it and its URL. */
  async federate(html, baseUrl) {
    const chunk = [...html.matchAll(/<form\b[^>]*>[\s\S]*?<\/form>/gi)]
      .map((m) => m[0])
      .find((f) => f.includes(`name="connector" value="${FEDERATE}"`));
    assert(chunk, `login page offers connector ${FEDERATE}: ${html.slice(0, 800)}`);
    const f = parseForm(chunk, baseUrl);
    step(`browser: sign in with connector ${FEDERATE}`);
    let url = f.action;
    let res = await this.request('POST', url, new URLSearchParams(f.hidden).toString());
    for (let i = 0; i < 20; i++) {
      if (res.status >= 300 && res.status < 400) {
        url = new URL(res.headers.get('location'), url);
        await res.text();
        res = await this.request('GET', url);
        continue;
      }
      const page = await res.text();
      assert(res.status === 200, `${url}: HTTP ${res.status}: ${page.slice(0, 300)}`);
      if (page.includes('action="/consent"')) return { html: page, url };
      const form = parseForm(page, url);
      const body = { ...form.hidden };
      if (form.fields.includes('login')) {
        step(`idp: login form at ${url.origin}${form.action.pathname}`);
        body.login = USERNAME;
        body.password = 'any-password';
      } else {
        step(`idp: consent form at ${url.origin}${form.action.pathname}`);
      }
      url = form.action;
      res = await this.request(form.method.toUpperCase(), url, new URLSearchParams(body).toString());
    }
    throw new Error('federated sign-in: too many redirects');
  }

  /** Warden's consent page -> approve; returns the redirect URL (with code, state, iss). */
  async consent(html, baseUrl) {
    const consent = parseForm(html, baseUrl);
    const approve = consent.buttons.find((b) => b.value === 'approve');
    assert(approve?.name, `consent page has an approve button: ${JSON.stringify(consent.buttons)}`);
    const scopes = [...html.matchAll(/<li><code>([^<]*)<\/code><\/li>/g)].map((m) => htmlUnescape(m[1]));
    step(`browser: signed in; consent for scopes [${scopes.join(' ')}]`);

    const res = await this.request('POST', consent.action, new URLSearchParams({ ...consent.hidden, [approve.name]: approve.value }).toString());
    await res.text();
    const location = res.headers.get('location');
    assert(res.status === 302 && location, `POST ${consent.action.pathname}: expected 302 with Location, got ${res.status}`);
    return new URL(location);
  }
}

// --- the OAuthClientProvider (in memory) -------------------------------------------------------

class InMemoryProvider {
  constructor({ redirectUrl, clientInformation, clientMetadataUrl }) {
    this._redirectUrl = redirectUrl;
    this.clientMetadataUrl = clientMetadataUrl;
    this._clientInformation = clientInformation;
    this.browser = new Browser();
    this.authorizationCode = undefined;
    this.redirects = 0;
  }
  get redirectUrl() {
    return this._redirectUrl;
  }
  get clientMetadata() {
    return {
      client_name: 'Warden e2e (TypeScript SDK)',
      redirect_uris: [this._redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    };
  }
  state() {
    this._state = randomBytes(16).toString('base64url');
    return this._state;
  }
  clientInformation() {
    return this._clientInformation;
  }
  saveClientInformation(info) {
    this.registered = info;
    this._clientInformation = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  saveCodeVerifier(v) {
    this._codeVerifier = v;
  }
  codeVerifier() {
    if (!this._codeVerifier) throw new Error('no code verifier saved');
    return this._codeVerifier;
  }
  saveDiscoveryState(s) {
    this._discovery = s;
  }
  discoveryState() {
    return this._discovery;
  }
  async redirectToAuthorization(authorizationUrl) {
    this.redirects += 1;
    const u = new URL(authorizationUrl);
    const p = u.searchParams;
    assert(p.get('code_challenge_method') === 'S256', 'SDK sends PKCE S256');
    assert(p.get('code_challenge'), 'SDK sends a code_challenge');
    assert(p.get('redirect_uri') === this._redirectUrl, `redirect_uri ${p.get('redirect_uri')}`);
    this.authorizeParams = {
      client_id: p.get('client_id'),
      redirect_uri: p.get('redirect_uri'),
      scope: p.get('scope'),
      resource: p.get('resource'),
      code_challenge_method: p.get('code_challenge_method'),
    };
    step(`redirectToAuthorization ${u.origin}${u.pathname} client_id=${p.get('client_id')} scope="${p.get('scope')}" resource=${p.get('resource')}`);
    const back = await this.browser.authorize(u);
    assert(`${back.origin}${back.pathname}` === this._redirectUrl, `redirected to ${back.origin}${back.pathname}, expected ${this._redirectUrl}`);
    const err = back.searchParams.get('error');
    assert(!err, `authorization error: ${err} ${back.searchParams.get('error_description')}`);
    assert(back.searchParams.get('state') === this._state, 'state round-trips');
    this.redirectIss = back.searchParams.get('iss');
    this.authorizationCode = back.searchParams.get('code');
    assert(this.authorizationCode, 'code in redirect');
    step(`browser: 302 -> ${back.origin}${back.pathname}?code=…&state=…&iss=${this.redirectIss}`);
  }
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// --- main --------------------------------------------------------------------------------------

async function main() {
  // (The package's exports map `./*` onto dist/, so read its package.json by path.)
  const pkg = new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url);
  summary.sdk = JSON.parse(readFileSync(pkg, 'utf8')).version;

  const redirectUrl = mode === 'dcr' ? `http://localhost:${await freePort()}/callback` : 'http://localhost:19876/callback';
  const provider = new InMemoryProvider({
    redirectUrl,
    clientInformation: mode === 'preregistered' ? { client_id: 'mcp-client-cli' } : undefined,
    clientMetadataUrl: mode === 'cimd' ? CIMD_URL : undefined,
  });

  // Every HTTP exchange the transport (and the SDK's auth code) makes, for the assertions.
  const seen = [];
  const recordingFetch = async (input, init) => {
    const res = await fetch(input, init);
    const target = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const auth = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined)).has('authorization');
    seen.push({ method: init?.method ?? 'GET', url: target, status: res.status, auth, www: res.headers.get('www-authenticate') });
    return res;
  };
  const mcpUrl = new URL(url);
  const newTransport = () => new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: recordingFetch });
  const client = new Client({ name: 'warden-e2e-ts', version: '0.0.0' });

  // 1. Unauthenticated: 401 -> the SDK runs discovery (+ registration) and redirects; connect throws UnauthorizedError.
  let transport = newTransport();
  let unauthorized = false;
  try {
    await client.connect(transport);
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    unauthorized = true;
  }
  assert(unauthorized, 'first connect without a token throws UnauthorizedError');
  const first401 = seen.find((x) => x.url === mcpUrl.href);
  assert(first401?.status === 401 && !first401.auth, `the first MCP request (no token) got 401: ${JSON.stringify(seen[0])}`);
  assert(/^Bearer /.test(first401.www ?? ''), `401 carries a Bearer challenge: ${first401.www}`);
  assert(/resource_metadata="/.test(first401.www), `challenge names resource_metadata: ${first401.www}`);
  step(`401 from ${mcpUrl.pathname}: WWW-Authenticate: ${first401.www}`);
  const discovery = seen.filter((x) => /\/\.well-known\//.test(x.url)).map((x) => `${x.status} ${new URL(x.url).pathname}`);
  step(`discovery: ${discovery.join(', ')}`);
  assert(discovery.some((d) => d.startsWith('200 /.well-known/oauth-protected-resource')), 'protected resource metadata fetched');
  assert(discovery.some((d) => /^200 \/\.well-known\/(oauth-authorization-server|openid-configuration)/.test(d)), 'authorization server metadata fetched');
  if (mode === 'dcr') {
    assert(provider.registered?.client_id, 'the SDK registered dynamically');
    assert(seen.some((x) => x.method === 'POST' && new URL(x.url).pathname === '/register' && x.status === 201), 'POST /register -> 201');
    step(`registered dynamically: client_id=${provider.registered.client_id}`);
  } else {
    if (mode === 'cimd') {
      assert(provider.authorizeParams.client_id === CIMD_URL, `client_id is the metadata document URL: ${provider.authorizeParams.client_id}`);
      step(`client id metadata document: client_id=${CIMD_URL}`);
    }
    // (The SDK saves the URL-based client information of a CIMD client; it registers nothing.)
    assert(mode === 'cimd' || !provider.registered, 'no dynamic registration for the pre-registered client');
    assert(!seen.some((x) => new URL(x.url).pathname === '/register'), 'no /register request');
  }
  assert(provider.redirects === 1, `exactly one authorization redirect (got ${provider.redirects})`);
  assert(provider.authorizationCode, 'authorization code obtained');
  assert(provider._discovery?.authorizationServerMetadata?.issuer, 'discovery state saved');
  const issuer = provider._discovery.authorizationServerMetadata.issuer;
  assert(provider.redirectIss === issuer, `RFC 9207 iss ${provider.redirectIss} equals the issuer ${issuer}`);

  // 2. Token exchange, then reconnect with a fresh transport (as the SDK's examples do).
  await transport.finishAuth(provider.authorizationCode);
  const tokens = provider.tokens();
  assert(tokens?.access_token, 'access token saved');
  assert(/^bearer$/i.test(tokens.token_type ?? ''), `token_type Bearer (${tokens.token_type})`);
  summary.issuer = issuer;
  summary.client_id = provider.authorizeParams.client_id;
  summary.scope_requested = provider.authorizeParams.scope;
  summary.scope_granted = tokens.scope;
  summary.resource = provider.authorizeParams.resource;
  summary.access_token_sha256 = createHash('sha256').update(tokens.access_token).digest('hex');
  if (process.env.E2E_TOKEN_FILE) appendFileSync(process.env.E2E_TOKEN_FILE, `${tokens.access_token}\n`, { mode: 0o600 });
  step(`token: sha256=${summary.access_token_sha256} scope="${tokens.scope}" expires_in=${tokens.expires_in}`);

  transport = newTransport();
  const before = seen.length;
  await client.connect(transport);
  const authed = seen.slice(before).filter((x) => x.url === mcpUrl.href);
  assert(authed.length && authed.every((x) => x.auth && x.status < 300), `reconnect: MCP requests carry the token and succeed: ${JSON.stringify(authed)}`);
  summary.server = client.getServerVersion();
  step(`connected: ${JSON.stringify(summary.server)}`);

  // 3. tools/list: exactly the expected namespaced tools.
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  summary.tools = names;
  assert(JSON.stringify(names) === JSON.stringify(EXPECTED_TOOLS), `tools/list: ${JSON.stringify(names)}`);

  if (PROFILE === 'echo') {
    // 4'. tools/call up_echo, a few times (behind a round-robin balancer: on every replica).
    summary.echoes = 0;
    for (let i = 0; i < 4; i++) {
      const args = { from: 'ts-sdk', mode, i };
      const r = await client.callTool({ name: 'up_echo', arguments: args });
      assert(!r.isError, `up_echo isError: ${JSON.stringify(r.content)}`);
      assert(JSON.stringify(r.structuredContent) === JSON.stringify(args), `up_echo echoes its arguments: ${JSON.stringify(r.structuredContent)}`);
      summary.echoes += 1;
    }
    step(`up_echo: ${summary.echoes} calls echoed their arguments`);
    await transport.close();
    summary.ok = true;
    return;
  }

  // 4. tools/call listAccounts: the 8 seeded accounts.
  const result = await client.callTool({ name: 'enterprise_ledger_listAccounts', arguments: {} });
  assert(!result.isError, `listAccounts isError: ${JSON.stringify(result.content)}`);
  let data = result.structuredContent;
  if (!data) {
    const text = (result.content ?? []).find((c) => c.type === 'text')?.text;
    data = text ? JSON.parse(text) : undefined;
  }
  const ids = (data?.accounts ?? []).map((a) => a.accountId).sort();
  summary.accounts = ids;
  assert(data?.count === 8, `count 8 (got ${data?.count})`);
  assert(JSON.stringify(ids) === JSON.stringify(EXPECTED_ACCOUNTS), `account ids: ${JSON.stringify(ids)}`);
  step(`listAccounts: ${ids.length} accounts`);

  // 5. The Employee Directory, a REST API bridged into tools.
  const call = async (name, args) => {
    const r = await client.callTool({ name, arguments: args });
    assert(!r.isError, `${name} isError: ${JSON.stringify(r.content)}`);
    return r.structuredContent;
  };
  const emps = await call('employee_directory_listEmployees', {});
  assert(emps?.total >= 10, `listEmployees total >= 10 (got ${emps?.total})`);
  const e = await call('employee_directory_getEmployee', { id: 'E1001' });
  assert(e?.id === 'E1001', `getEmployee E1001 (got ${JSON.stringify(e)})`);
  const depts = await call('employee_directory_listDepartments', {});
  assert(Array.isArray(depts?.items) && depts.items.length > 0, `listDepartments: ${JSON.stringify(depts)}`);
  const suffix = `${process.pid}-${Date.now()}`;
  const created = await call('employee_directory_createEmployee', {
    body: { firstName: 'Kyle', lastName: `Reese-${mode}`, email: `kyle.${suffix}@orchestrator.lab`, department: 'Operations', title: 'Sergeant' },
  });
  assert(created?.id, `createEmployee: ${JSON.stringify(created)}`);
  step(`directory: ${emps.total} employees, created ${created.id}`);

  await transport.close();
  summary.ok = true;
}

main()
  .then(() => {
    console.log(JSON.stringify(summary));
    process.exit(0);
  })
  .catch((e) => {
    summary.ok = false;
    summary.error = String(e?.stack ?? e);
    console.log(JSON.stringify(summary));
    process.exit(1);
  });
