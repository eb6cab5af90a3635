// k6 load for the console test and its cost measurement: a fixed call rate mixing allowed,
// denied and failing calls against `warden demo`. Run by tests/console/run.sh and cost.sh,
// which pass the tokens in the environment (never printed or summarized here).
//
// Env: MCP_URL, JOHN_TOKEN (scope mcp:tools), SARAH_TOKEN (mcp:tools pii:read), BAD_TOKEN,
//      RATE (calls/s, 40), DURATION (30s), COUNTS_JSON (counts written there at the end).
// Every 10 calls: 4 john listAccounts (allow), 2 sarah getCustomerPII (allow), 2 john
// getCustomerPII (deny, policy), 1 john getEmployee E9999 (error: the directory answers 404),
// 1 a bad token (unauthenticated: refused, counted with the denies).
import http from 'k6/http';
import { Counter } from 'k6/metrics';

const MCP_URL = __ENV.MCP_URL;
const RATE = parseInt(__ENV.RATE || '40', 10);
const PROTOCOL = '2025-06-18';
const sent = new Counter('calls_sent');
const cats = ['allow', 'allow', 'allow', 'allow', 'allow_pii', 'allow_pii', 'deny', 'deny', 'error', 'unauth'];
const counters = Object.fromEntries([...new Set(cats)].map((c) => [c, new Counter(`cat_${c}`)]));

export const options = {
  scenarios: {
    fixed: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Math.max(4, Math.ceil(RATE / 20)),
      maxVUs: Math.max(8, Math.ceil(RATE / 5)),
      gracefulStop: '10s',
    },
  },
  setupTimeout: '60s',
};

function headers(token, sid) {
  const h = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    authorization: `Bearer ${token}`,
    'mcp-protocol-version': PROTOCOL,
  };
  if (sid) h['mcp-session-id'] = sid;
  return h;
}

function openSession(user, token) {
  const init = {
    jsonrpc: '2.0', id: 0, method: 'initialize',
    params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'k6-console', version: '1' } },
  };
  const res = http.post(MCP_URL, JSON.stringify(init), { headers: headers(token) });
  const sid = res.headers['Mcp-Session-Id'] || res.headers['mcp-session-id'];
  if (res.status !== 200 || !sid) throw new Error(`initialize as ${user}: HTTP ${res.status}`);
  http.post(MCP_URL, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }), { headers: headers(token, sid) });
  return sid;
}

export function setup() {
  return { john: openSession('john', __ENV.JOHN_TOKEN), sarah: openSession('sarah', __ENV.SARAH_TOKEN) };
}

const call = (name, args) => JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } });
const LIST = call('enterprise_ledger_listAccounts', {});
const PII = call('enterprise_ledger_getCustomerPII', { customerId: 'CUST-001' });
const MISSING = call('employee_directory_getEmployee', { id: 'E9999' });

export default function (s) {
  const cat = cats[__ITER % cats.length];
  const post = (body, token, sid) => http.post(MCP_URL, body, { headers: headers(token, sid) });
  if (cat === 'allow') post(LIST, __ENV.JOHN_TOKEN, s.john);
  else if (cat === 'allow_pii') post(PII, __ENV.SARAH_TOKEN, s.sarah);
  else if (cat === 'deny') post(PII, __ENV.JOHN_TOKEN, s.john);
  else if (cat === 'error') post(MISSING, __ENV.JOHN_TOKEN, s.john);
  else post(LIST, __ENV.BAD_TOKEN, s.john);
  sent.add(1);
  counters[cat].add(1);
}

export function handleSummary(data) {
  const count = (n) => ((data.metrics[n] || {}).values || {}).count || 0;
  const out = { calls_sent: count('calls_sent') };
  for (const c of Object.keys(counters)) out[c] = count(`cat_${c}`);
  const o = { stdout: `k6 counts: ${JSON.stringify(out)}\n` };
  if (__ENV.COUNTS_JSON) o[__ENV.COUNTS_JSON] = JSON.stringify(out);
  return o;
}
