// The soak's mixed load (tests/soak/run.sh): allowed, denied, unauthenticated, malformed and
// oversize POST /mcp requests from several users and two clients, in both MCP eras — a
// 2025-06-18 session (initialize in setup, Mcp-Session-Id on every call) or a stateless
// 2026-07-28 request (`_meta` protocolVersion/clientCapabilities, MCP-Protocol-Version,
// Mcp-Method, Mcp-Name; no session).
//
// Env: MCP_URL, TOKENS_FILE (idp.py's), VUS, DURATION (s), ROTATE_AFTER_MS (from the end of
// setup, when the schedule starts: the users' tokens signed by the rotated-in key k2 are used
// from then on; 0 = never), RUN_ID.
// Every tool call carries a unique `call_id` (and the caller's `user`) in its arguments, so the
// upstream's own log says what ran and how often. Every request, whatever its answer, is one
// console line (run.sh passes --console-output): {id, cat, era, user, status, rid (the
// x-request-id answered), t0 (epoch ms), ms, rpc}. Never a token.
import http from 'k6/http';
import { Counter } from 'k6/metrics';

const MCP_URL = __ENV.MCP_URL;
const VUS = parseInt(__ENV.VUS || '8', 10);
const DURATION = parseInt(__ENV.DURATION || '60', 10);
const ROTATE_AFTER_MS = parseInt(__ENV.ROTATE_AFTER_MS || '0', 10);
const RUN_ID = __ENV.RUN_ID || 'soak';
const TOKENS = JSON.parse(open(__ENV.TOKENS_FILE));
const LEGACY = '2025-06-18';
const MODERN = '2026-07-28';
const PAD = 'x'.repeat(80 * 1024); // over the replicas' limits.max_body_bytes (64 KiB)

const sent = new Counter('soak_requests');

export const options = {
  scenarios: {
    soak: { executor: 'constant-vus', vus: VUS, duration: `${DURATION}s`, gracefulStop: '20s' },
  },
  setupTimeout: '120s',
  summaryTrendStats: ['med', 'p(99)', 'max'],
};

// Users (idp.py --users): alice may read the secret (scope secret:read), bob and carol not.
const USERS = ['alice', 'bob', 'carol'];

let loadStart = 0;
function token(user) {
  const set = ROTATE_AFTER_MS > 0 && Date.now() >= loadStart + ROTATE_AFTER_MS ? 'k2' : 'k1';
  return TOKENS[set][user];
}

function headers(tok, era, sid, name) {
  const h = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  if (tok) h.authorization = `Bearer ${tok}`;
  if (era === 'modern') {
    h['mcp-protocol-version'] = MODERN;
    h['mcp-method'] = 'tools/call';
    if (name) h['mcp-name'] = name;
  } else {
    h['mcp-protocol-version'] = LEGACY;
    if (sid) h['mcp-session-id'] = sid;
  }
  return h;
}

function rpcOf(res) {
  const body = res.body || '';
  try {
    if (body.trimStart().startsWith('{')) return JSON.parse(body);
    for (const line of body.split('\n')) if (line.startsWith('data:')) return JSON.parse(line.slice(5));
  } catch (_) {
    return null;
  }
  return null;
}

function openSession(user) {
  const init = {
    jsonrpc: '2.0', id: 0, method: 'initialize',
    params: { protocolVersion: LEGACY, capabilities: {}, clientInfo: { name: 'k6-soak', version: '1' } },
  };
  for (let attempt = 0; attempt < 20; attempt++) {
    const res = http.post(MCP_URL, JSON.stringify(init), { headers: headers(TOKENS.k1[user], 'legacy'), tags: { kind: 'setup' } });
    const sid = res.headers['Mcp-Session-Id'] || res.headers['mcp-session-id'];
    if (res.status === 200 && sid) {
      http.post(MCP_URL, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
        { headers: headers(TOKENS.k1[user], 'legacy', sid), tags: { kind: 'setup' } });
      return sid;
    }
  }
  throw new Error(`initialize as ${user} failed`);
}

export function setup() {
  const sessions = [];
  for (let i = 0; i < VUS; i++) {
    const s = {};
    for (const u of USERS) s[u] = openSession(u);
    sessions.push(s);
  }
  return { sessions, t0: Date.now() };
}

function callBody(id, tool, user, callId, era, extra) {
  const params = { name: tool, arguments: Object.assign({ call_id: callId, user }, extra || {}) };
  if (era === 'modern') {
    params._meta = { 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': {} };
  }
  return JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params });
}

export default function (data) {
  loadStart = data.t0;
  const s = data.sessions[(__VU - 1) % data.sessions.length];
  const era = Math.random() < 0.5 ? 'modern' : 'legacy';
  const callId = `${RUN_ID}-${__VU}-${__ITER}`;
  const r = Math.random();
  let cat;
  let user = USERS[(__VU + __ITER) % USERS.length];
  let tool = 'up_echo';
  let tok;
  let body;
  if (r < 0.5) {
    cat = 'allow';
    tok = token(user);
    body = callBody(__ITER, tool, user, callId, era);
  } else if (r < 0.6) {
    cat = 'allow';
    user = 'alice';
    tool = 'up_secret';
    tok = token(user);
    body = callBody(__ITER, tool, user, callId, era);
  } else if (r < 0.72) {
    cat = 'deny';
    user = 'bob';
    tool = 'up_secret';
    tok = token(user);
    body = callBody(__ITER, tool, user, callId, era);
  } else if (r < 0.82) {
    cat = 'unauth';
    user = 'alice';
    tok = r < 0.8 ? TOKENS.bad[__ITER % TOKENS.bad.length] : null;
    body = callBody(__ITER, tool, user, callId, era);
  } else if (r < 0.92) {
    cat = 'malformed';
    tok = token(user);
    body = (__ITER % 2 === 0) ? `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up_echo","arguments":{"call_id":"${callId}"` : '[]';
  } else {
    cat = 'oversize';
    tok = token(user);
    body = callBody(__ITER, tool, user, callId, era, { pad: PAD });
  }
  const t0 = Date.now();
  const res = http.post(MCP_URL, body, {
    headers: headers(tok, era, era === 'legacy' ? s[user] : null, tool),
    tags: { cat, era },
    timeout: '30s',
  });
  sent.add(1);
  const msg = rpcOf(res);
  let rpc = 'none';
  if (msg && msg.error) rpc = `error:${msg.error.code}`;
  else if (msg && msg.result) rpc = msg.result.isError ? 'isError' : 'result';
  console.log(JSON.stringify({
    id: callId, cat, era, user, tool, status: res.status, rid: res.headers['X-Request-Id'] || null,
    t0, ms: res.timings.duration, rpc, err: res.error_code || 0,
  }));
}

export function handleSummary(data) {
  const n = ((data.metrics.soak_requests || {}).values || {}).count || 0;
  return { stdout: `k6: ${n} soak requests\n` };
}
