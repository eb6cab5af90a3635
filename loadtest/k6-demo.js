// k6 load test of `warden demo`: per-call delegation through the gateway to the Enterprise Ledger.
// Run it through loadtest/demo.sh, which starts the demo and passes the URLs below.
//
// Env: MCP_URL (gateway /mcp), ISSUER (authorization server), VUS (16), DURATION (20s),
//      GET_SHARE (share of getAccount calls, 0.25), SUMMARY_JSON (where handleSummary writes).
//
// setup() logs in john and sarah through the `loadtest` client (password grant) and opens one
// MCP session per VU (VUs alternate between the two users). Each iteration is one
// `tools/call` with the VU's user token and session: `enterprise_ledger_listAccounts`, or
// `enterprise_ledger_getAccount` for ACC-1001 in GET_SHARE of the iterations.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const MCP_URL = __ENV.MCP_URL;
const ISSUER = __ENV.ISSUER;
const VUS = parseInt(__ENV.VUS || '16', 10);
const DURATION = __ENV.DURATION || '20s';
const GET_SHARE = parseFloat(__ENV.GET_SHARE || '0.25');
const PROTOCOL = '2025-06-18';

const USERS = [
  { name: 'john.mcclane@orchestrator.lab', password: 'yippiekayay' },
  { name: 'sarah.connor@orchestrator.lab', password: 'judgmentday' },
];

const rpcErrors = new Counter('jsonrpc_errors');
const toolErrors = new Counter('tool_errors');

export const options = {
  scenarios: {
    calls: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION.match(/[a-z]$/) ? DURATION : `${DURATION}s`,
      gracefulStop: '5s',
    },
  },
  setupTimeout: '60s',
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  // Sub-metrics for the load calls only (setup's logins and initializes are excluded).
  thresholds: {
    'http_reqs{kind:call}': ['count>=0'],
    'http_req_duration{kind:call}': ['max>=0'],
    'http_req_duration{tool:listAccounts}': ['max>=0'],
    'http_req_duration{tool:getAccount}': ['max>=0'],
    'checks{kind:call}': ['rate>=0'],
  },
};

function mcpHeaders(token, sid) {
  const h = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    authorization: `Bearer ${token}`,
    'mcp-protocol-version': PROTOCOL,
  };
  if (sid) h['mcp-session-id'] = sid;
  return h;
}

// The JSON-RPC message of a response: a JSON body, or the first `data:` line of an SSE stream.
function rpc(res) {
  const body = res.body || '';
  try {
    if (body.trimStart().startsWith('{')) return JSON.parse(body);
    for (const line of body.split('\n')) {
      if (line.startsWith('data:')) return JSON.parse(line.slice(5));
    }
  } catch (_) {
    return null;
  }
  return null;
}

function login(user) {
  const res = http.post(
    `${ISSUER}/token`,
    {
      grant_type: 'password',
      client_id: 'loadtest',
      username: user.name,
      password: user.password,
      scope: 'mcp:tools',
      resource: MCP_URL,
    },
    { tags: { kind: 'setup' } },
  );
  if (res.status !== 200) throw new Error(`login ${user.name}: ${res.status} ${res.body}`);
  return res.json('access_token');
}

function openSession(token) {
  const init = {
    jsonrpc: '2.0', id: 0, method: 'initialize',
    params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'k6-demo', version: '1' } },
  };
  const res = http.post(MCP_URL, JSON.stringify(init), { headers: mcpHeaders(token), tags: { kind: 'setup' } });
  const sid = res.headers['Mcp-Session-Id'] || res.headers['mcp-session-id'];
  const msg = rpc(res);
  if (res.status !== 200 || !sid || !msg || !msg.result) {
    throw new Error(`initialize: ${res.status} ${res.body}`);
  }
  const note = http.post(MCP_URL, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    { headers: mcpHeaders(token, sid), tags: { kind: 'setup' } });
  if (note.status < 200 || note.status >= 300) throw new Error(`notifications/initialized: ${note.status}`);
  return sid;
}

export function setup() {
  if (!MCP_URL || !ISSUER) throw new Error('MCP_URL and ISSUER are required (use loadtest/demo.sh)');
  const tokens = USERS.map(login);
  const sessions = [];
  for (let i = 0; i < VUS; i++) {
    const u = i % USERS.length;
    sessions.push({ user: u, token: tokens[u], sid: openSession(tokens[u]) });
  }
  return { sessions };
}

const LIST = JSON.stringify({
  jsonrpc: '2.0', id: 1, method: 'tools/call',
  params: { name: 'enterprise_ledger_listAccounts', arguments: {} },
});
const GET = JSON.stringify({
  jsonrpc: '2.0', id: 2, method: 'tools/call',
  params: { name: 'enterprise_ledger_getAccount', arguments: { accountId: 'ACC-1001' } },
});

export default function (data) {
  const s = data.sessions[(__VU - 1) % data.sessions.length];
  const get = Math.random() < GET_SHARE;
  const tool = get ? 'getAccount' : 'listAccounts';
  const res = http.post(MCP_URL, get ? GET : LIST, {
    headers: mcpHeaders(s.token, s.sid),
    tags: { kind: 'call', tool, name: `tools/call ${tool}` },
  });
  const msg = rpc(res);
  if (msg && msg.error) rpcErrors.add(1, { tool });
  if (msg && msg.result && msg.result.isError) toolErrors.add(1, { tool });
  check(
    res,
    {
      'status 200': (r) => r.status === 200,
      'JSON-RPC result, not error': () => !!msg && msg.result !== undefined && !msg.error && !msg.result.isError,
    },
    { kind: 'call' },
  );
}

export function handleSummary(data) {
  const out = {};
  if (__ENV.SUMMARY_JSON) out[__ENV.SUMMARY_JSON] = JSON.stringify(data, null, 1);
  return out;
}
