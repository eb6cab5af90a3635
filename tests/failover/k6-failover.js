// k6 load of MCP tools/call through nginx in front of Warden replicas, for the failover proof.
// Run by tests/failover/run.sh, which starts the replicas and the balancer, stops one replica
// while this runs, and compares what this script counted with what the upstream executed and
// what the replicas' audit trails recorded.
//
// Env: MCP_URL (the balancer's /mcp), TOKENS_FILE (one token per line, a distinct user each;
//      VU n uses line n), REPLICAS (the replicas' ports, space-separated), VUS (8),
//      DURATION (15s), SUMMARY_JSON (the whole k6 summary), COUNTS_JSON (just the counts).
//
// Each VU opens one MCP session through the balancer (initialize + notifications/initialized)
// on its first iteration, then sends tools/call `up_echo` with that session id in a loop, so
// the calls of one session land on every replica. Each call carries a unique
// `arguments.call_id` (VU-iteration), which the upstream counts, so a call run twice shows.
// Every call counts in `calls_started` before it is sent and in `calls_sent` once answered (or
// refused): a call still unanswered when k6 stops (gracefulStop) is only in `calls_started`.
// A call counts in `calls_ok` only if it is answered 200 with a JSON-RPC result that is not
// isError and echoes its own call_id; anything else counts in `calls_failed` and the first
// few are printed (status, the replica nginx tried, the start of the body). The nginx
// response header `x-upstream` ($upstream_addr) says which replica(s) served a call:
// `served_<port>` per replica, `calls_retried` when nginx tried more than one.
import http from 'k6/http';
import { check } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';

const MCP_URL = __ENV.MCP_URL;
const VUS = parseInt(__ENV.VUS || '8', 10);
const DURATION = __ENV.DURATION || '15s';
const REPLICAS = (__ENV.REPLICAS || '').split(' ').filter((p) => p.length > 0);
const PROTOCOL = '2025-06-18';
const TOOL = 'up_echo';
const PRINT_FAILURES = 5; // per VU

const tokens = new SharedArray('tokens', () =>
  open(__ENV.TOKENS_FILE).split('\n').filter((l) => l.length > 0),
);

const started = new Counter('calls_started');
const sent = new Counter('calls_sent');
const ok = new Counter('calls_ok');
const failed = new Counter('calls_failed');
const retried = new Counter('calls_retried');
const opened = new Counter('sessions_opened');
const initFailed = new Counter('initialize_failed');
const onAll = new Counter('sessions_on_all_replicas');
const served = {};
for (const p of REPLICAS) served[p] = new Counter(`served_${p}`);

export const options = {
  scenarios: {
    calls: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION.match(/[a-z]$/) ? DURATION : `${DURATION}s`,
      // A call unanswered this long after the end is cut (and counted as started, not sent).
      gracefulStop: '10s',
    },
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  thresholds: {
    calls_failed: ['count==0'],
    initialize_failed: ['count==0'],
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

// Per-VU state (each VU has its own copy of module globals).
let sid = null;
let printed = 0;
const seen = new Set();

function upstreamOf(res) {
  return res.headers['X-Upstream'] || res.headers['x-upstream'] || '';
}

function report(what, res) {
  if (printed >= PRINT_FAILURES) return;
  printed += 1;
  const body = (res.body || res.error || '').slice(0, 200).replace(/\s+/g, ' ');
  console.warn(`${what} failed: VU ${__VU} iter ${__ITER} HTTP ${res.status} via [${upstreamOf(res)}] ${body}`);
}

// Errors name the VU, never the token.
function openSession(token) {
  const init = {
    jsonrpc: '2.0', id: 0, method: 'initialize',
    params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'k6-failover', version: '1' } },
  };
  const res = http.post(MCP_URL, JSON.stringify(init), { headers: headers(token), tags: { kind: 'setup' } });
  const id = res.headers['Mcp-Session-Id'] || res.headers['mcp-session-id'];
  const msg = rpc(res);
  if (res.status !== 200 || !id || !msg || !msg.result) {
    initFailed.add(1);
    report('initialize', res);
    return null;
  }
  const note = http.post(MCP_URL, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    { headers: headers(token, id), tags: { kind: 'setup' } });
  if (note.status < 200 || note.status >= 300) {
    initFailed.add(1);
    report('notifications/initialized', note);
    return null;
  }
  opened.add(1);
  return id;
}

export default function () {
  const token = tokens[(__VU - 1) % tokens.length];
  if (!sid) {
    sid = openSession(token);
    if (!sid) return;
  }
  const callId = `${__VU}-${__ITER}`;
  const body = JSON.stringify({
    jsonrpc: '2.0', id: __ITER + 1, method: 'tools/call',
    params: { name: TOOL, arguments: { call_id: callId } },
  });
  started.add(1);
  const res = http.post(MCP_URL, body, { headers: headers(token, sid), tags: { kind: 'call' } });
  sent.add(1);
  const msg = rpc(res);
  const good = res.status === 200 && !!msg && !!msg.result && !msg.error && !msg.result.isError
    && !!msg.result.structuredContent && msg.result.structuredContent.call_id === callId;
  check(res, { 'tools/call answered with its own result': () => good });
  const via = upstreamOf(res).split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (via.length > 1) retried.add(1);
  if (good) {
    ok.add(1);
    const port = (via[via.length - 1] || '').split(':').pop();
    if (served[port]) served[port].add(1);
    if (!seen.has(port)) {
      seen.add(port);
      if (seen.size === REPLICAS.length) onAll.add(1);
    }
  } else {
    failed.add(1);
    report('tools/call', res);
  }
}

export function handleSummary(data) {
  const count = (n) => ((data.metrics[n] || {}).values || {}).count || 0;
  const counts = {
    calls_started: count('calls_started'),
    calls_sent: count('calls_sent'),
    calls_ok: count('calls_ok'),
    calls_failed: count('calls_failed'),
    calls_retried: count('calls_retried'),
    sessions_opened: count('sessions_opened'),
    initialize_failed: count('initialize_failed'),
    sessions_on_all_replicas: count('sessions_on_all_replicas'),
    served: {},
  };
  for (const p of REPLICAS) counts.served[p] = count(`served_${p}`);
  const d = ((data.metrics.http_req_duration || {}).values) || {};
  counts.duration_ms = { med: d.med, p90: d['p(90)'], p99: d['p(99)'], max: d.max };
  const out = { stdout: `k6 counts: ${JSON.stringify(counts)}\n` };
  if (__ENV.SUMMARY_JSON) out[__ENV.SUMMARY_JSON] = JSON.stringify(data, null, 1);
  if (__ENV.COUNTS_JSON) out[__ENV.COUNTS_JSON] = JSON.stringify(counts, null, 1);
  return out;
}
