// k6 mixed load against `warden demo` for the audit proof (issue 6). Run by tests/load-audit/run.sh,
// which logs the users in (password grant of the `loadtest` client) and passes their tokens in the
// environment, so that this script never prints, logs or summarizes a token.
//
// Env: MCP_URL (gateway /mcp), JOHN_TOKEN (john, scope mcp:tools), SARAH_TOKEN (sarah, compliance,
//      scope mcp:tools pii:read audit:read), BAD_TOKENS (bad bearer tokens, space-separated),
//      VUS (8), DURATION (10s), UNAUTH_EVERY (one unauthenticated call per N iterations, 25),
//      SUMMARY_JSON (handleSummary writes the whole k6 summary there), COUNTS_JSON (just the counts).
//
// Every iteration is exactly one POST /mcp tools/call, in one of four categories, each with its
// own counter (incremented only when the answer is exactly what the category expects):
//   allow_john_list   john  enterprise_ledger_listAccounts          -> 200, result, not isError
//   allow_sarah_pii   sarah enterprise_ledger_getCustomerPII CUST-001 -> 200, result, not isError
//   deny_john_pii     john  enterprise_ledger_getCustomerPII CUST-001 -> 200, isError, the policy's reason
//   unauth_bad_token  a bad token                                  -> 401 with WWW-Authenticate
// Anything else counts in `unexpected` (with the category as a tag); run.sh fails on any.
// Every request, whatever its answer, counts in `calls_sent`.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const MCP_URL = __ENV.MCP_URL;
const VUS = parseInt(__ENV.VUS || '8', 10);
const DURATION = __ENV.DURATION || '10s';
const UNAUTH_EVERY = parseInt(__ENV.UNAUTH_EVERY || '25', 10);
const PROTOCOL = '2025-06-18';
const DENY_REASON = 'Access denied: PII access requires pii:read scope.';

const sent = new Counter('calls_sent');
const unexpected = new Counter('unexpected');
const counters = {
  allow_john_list: new Counter('allow_john_list'),
  allow_sarah_pii: new Counter('allow_sarah_pii'),
  deny_john_pii: new Counter('deny_john_pii'),
  unauth_bad_token: new Counter('unauth_bad_token'),
};

export const options = {
  scenarios: {
    mixed: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION.match(/[a-z]$/) ? DURATION : `${DURATION}s`,
      gracefulStop: '30s',
    },
  },
  setupTimeout: '60s',
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  thresholds: {
    // Sub-metrics of the load calls only (setup's initialize requests are excluded).
    'http_reqs{kind:call}': ['count>=0'],
    'http_req_duration{kind:call}': ['max>=0'],
    unexpected: ['count==0'],
  },
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

// Errors name the user, never the token.
function openSession(user, token) {
  const init = {
    jsonrpc: '2.0', id: 0, method: 'initialize',
    params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'k6-load-audit', version: '1' } },
  };
  const res = http.post(MCP_URL, JSON.stringify(init), { headers: headers(token), tags: { kind: 'setup' } });
  const sid = res.headers['Mcp-Session-Id'] || res.headers['mcp-session-id'];
  const msg = rpc(res);
  if (res.status !== 200 || !sid || !msg || !msg.result) throw new Error(`initialize as ${user}: HTTP ${res.status}`);
  const note = http.post(MCP_URL, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    { headers: headers(token, sid), tags: { kind: 'setup' } });
  if (note.status < 200 || note.status >= 300) throw new Error(`notifications/initialized as ${user}: HTTP ${note.status}`);
  return sid;
}

export function setup() {
  if (!MCP_URL || !__ENV.JOHN_TOKEN || !__ENV.SARAH_TOKEN || !__ENV.BAD_TOKENS) {
    throw new Error('MCP_URL, JOHN_TOKEN, SARAH_TOKEN and BAD_TOKENS are required (use tests/load-audit/run.sh)');
  }
  // One session per VU and user (sessions are bound to their user). Tokens stay in __ENV:
  // setup data is not part of any output.
  const sessions = [];
  for (let i = 0; i < VUS; i++) {
    sessions.push({ john: openSession('john', __ENV.JOHN_TOKEN), sarah: openSession('sarah', __ENV.SARAH_TOKEN) });
  }
  return { sessions };
}

function call(name, args, id) {
  return JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });
}
const LIST = call('enterprise_ledger_listAccounts', {}, 1);
const PII = call('enterprise_ledger_getCustomerPII', { customerId: 'CUST-001' }, 2);

function text(msg) {
  const c = (msg && msg.result && msg.result.content) || [];
  return c.map((x) => x.text || '').join('\n');
}

export default function (data) {
  const s = data.sessions[(__VU - 1) % data.sessions.length];
  const bad = __ENV.BAD_TOKENS.split(' ');
  let cat;
  let res;
  if (UNAUTH_EVERY > 0 && __ITER % UNAUTH_EVERY === UNAUTH_EVERY - 1) {
    cat = 'unauth_bad_token';
    res = http.post(MCP_URL, LIST, {
      headers: headers(bad[(__VU + __ITER) % bad.length], s.john),
      tags: { kind: 'call', category: cat },
    });
  } else {
    const r = Math.random();
    if (r < 0.45) {
      cat = 'allow_john_list';
      res = http.post(MCP_URL, LIST, { headers: headers(__ENV.JOHN_TOKEN, s.john), tags: { kind: 'call', category: cat } });
    } else if (r < 0.7) {
      cat = 'allow_sarah_pii';
      res = http.post(MCP_URL, PII, { headers: headers(__ENV.SARAH_TOKEN, s.sarah), tags: { kind: 'call', category: cat } });
    } else {
      cat = 'deny_john_pii';
      res = http.post(MCP_URL, PII, { headers: headers(__ENV.JOHN_TOKEN, s.john), tags: { kind: 'call', category: cat } });
    }
  }
  sent.add(1, { category: cat });
  const msg = cat === 'unauth_bad_token' ? null : rpc(res);
  let ok;
  if (cat === 'unauth_bad_token') {
    ok = res.status === 401 && /^Bearer /.test(res.headers['Www-Authenticate'] || '');
  } else if (cat === 'deny_john_pii') {
    ok = res.status === 200 && !!msg && !!msg.result && msg.result.isError === true && text(msg).includes(DENY_REASON);
  } else {
    ok = res.status === 200 && !!msg && !!msg.result && !msg.error && !msg.result.isError;
  }
  check(res, { [`${cat} as expected`]: () => ok }, { kind: 'call' });
  if (ok) counters[cat].add(1);
  else unexpected.add(1, { category: cat, status: String(res.status) });
}

export function handleSummary(data) {
  const count = (n) => ((data.metrics[n] || {}).values || {}).count || 0;
  const counts = { calls_sent: count('calls_sent'), unexpected: count('unexpected') };
  for (const k of Object.keys(counters)) counts[k] = count(k);
  const d = ((data.metrics['http_req_duration{kind:call}'] || {}).values) || {};
  counts.duration_ms = { med: d.med, p90: d['p(90)'], p99: d['p(99)'], max: d.max };
  const out = { stdout: `k6 counts: ${JSON.stringify(counts)}\n` };
  if (__ENV.SUMMARY_JSON) out[__ENV.SUMMARY_JSON] = JSON.stringify(data, null, 1);
  if (__ENV.COUNTS_JSON) out[__ENV.COUNTS_JSON] = JSON.stringify(counts, null, 1);
  return out;
}
