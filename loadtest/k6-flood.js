// k6 flood of Warden's per-user rate limits and of its refusal paths. Run it through
// loadtest/flood.sh, which starts the gateway and passes the settings below.
//
// Env: MCP_URL (gateway /mcp), TOKENS_FILE (one token per line, one distinct subject each),
//      MODE (`users` or `garbage`), VUS (64), MAX_REQS (bound on requests), DURATION (bound on
//      time, e.g. 30s), BLOCK (consecutive requests per user, 20), SUMMARY_JSON.
//
// users:   each user in turn sends BLOCK `tools/call`s back to back, far over a limit of a few
//          per second, so most answers are 429; no session is opened (the limit is decided
//          before the session), so what remains in memory is the limiter's and token cache's.
// garbage: no token, junk bearer tokens, forged JWT-shaped tokens, valid tokens with bodies
//          that are not JSON, and 64 KiB junk bodies; every answer is a refusal.
import http from 'k6/http';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';

const MCP_URL = __ENV.MCP_URL;
const MODE = __ENV.MODE || 'users';
const VUS = parseInt(__ENV.VUS || '64', 10);
const MAX_REQS = parseInt(__ENV.MAX_REQS || '200000', 10);
const DURATION = __ENV.DURATION || '30s';
const BLOCK = parseInt(__ENV.BLOCK || '20', 10);

const tokens = new SharedArray('tokens', () =>
  open(__ENV.TOKENS_FILE).split('\n').filter((l) => l.length > 0),
);

const byStatus = {};
for (const s of ['200', '202', '400', '401', '404', '413', '429', '503', 'other', 'failed']) {
  byStatus[s] = new Counter(`status_${s}`);
}

export const options = {
  scenarios: {
    flood: {
      executor: 'shared-iterations',
      vus: VUS,
      iterations: MAX_REQS,
      maxDuration: DURATION,
    },
  },
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
};

function headers(auth) {
  const h = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': '2025-06-18',
  };
  if (auth) h.authorization = auth;
  return h;
}

function junk(n) {
  let s = '';
  while (s.length < n) s += Math.random().toString(36).slice(2);
  return s.slice(0, n);
}

const BIG = junk(64 * 1024);

function count(r) {
  const k = r.status === 0 ? 'failed' : String(r.status);
  (byStatus[k] || byStatus.other).add(1);
}

export default function () {
  const i = exec.scenario.iterationInTest;
  if (MODE === 'users') {
    const tok = tokens[Math.floor(i / BLOCK) % tokens.length];
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id: i,
      method: 'tools/call',
      params: { name: 'bench_echo', arguments: { i } },
    });
    count(http.post(MCP_URL, body, { headers: headers(`Bearer ${tok}`) }));
    return;
  }
  let r;
  switch (i % 5) {
    case 0:
      r = http.post(MCP_URL, junk(200), { headers: headers(null) });
      break;
    case 1:
      r = http.post(MCP_URL, '{}', { headers: headers(`Bearer ${junk(300)}`) });
      break;
    case 2:
      r = http.post(MCP_URL, '{}', {
        headers: headers(`Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IiR7aX0ifQ.${junk(200)}.${junk(86)}`),
      });
      break;
    case 3:
      r = http.post(MCP_URL, `{"jsonrpc":"2.0","id":${i},"method":${junk(40)}`, {
        headers: headers(`Bearer ${tokens[i % tokens.length]}`),
      });
      break;
    default:
      r = http.post(MCP_URL, BIG, { headers: headers(null) });
  }
  count(r);
}

export function handleSummary(data) {
  const out = { mode: MODE, requests: data.metrics.http_reqs ? data.metrics.http_reqs.values.count : 0 };
  out.rate = data.metrics.http_reqs ? data.metrics.http_reqs.values.rate : 0;
  out.p99_ms = data.metrics.http_req_duration ? data.metrics.http_req_duration.values['p(99)'] : null;
  out.status = {};
  for (const [k, v] of Object.entries(data.metrics)) {
    if (k.startsWith('status_')) out.status[k.slice(7)] = v.values.count;
  }
  return { [__ENV.SUMMARY_JSON || 'flood-summary.json']: JSON.stringify(out) };
}
