/**
 * Mixed eras behind one Warden (run by run.sh, which starts everything and passes it in env):
 * a 2025-11-25 client (@modelcontextprotocol/sdk 1.x, session) and a 2026-07-28 client
 * (@modelcontextprotocol/client 2.x pinned to 2026-07-28, stateless) each list the tools of
 * a 2025-11-25 upstream (legacy_*) and a 2026-07-28 upstream (modern_*) and call them. Checks:
 * the negotiated revisions, both catalogs visible to both clients, results intact, the policy
 * denial text identical in both eras, MRTR relayed (modern client, modern upstream), every
 * upstream call carrying a delegation token (signature checked against the authorization
 * server's JWKS; sub = the user, act.sub = Warden, at most 5 s), and one audit record per
 * call naming the client's and the upstream's revision.
 *
 * Then a request the legacy upstream sends outside any call (sampling) must reach a 2025-11-25
 * client on its GET stream and its answer the upstream; and a 2026-07-28 client's
 * subscriptions/listen with resourceSubscriptions must be told of a legacy upstream's update.
 *
 * Then, with a client of each era connected, a policy reload hides a tool: each must get
 * notifications/tools/list_changed (GET stream / subscriptions/listen).
 *
 * Env: GW_URL, TOKEN (the user's access token), USER_SUB, ACT_SUB, JWKS_URL, AUTH_LOG (the
 * fixtures' FIXTURE_AUTH_LOG), AUDIT_DIR, CONFIG (Warden's config file), ADMIN_URL. Prints `PASS name` / `FAIL name: why` lines and
 * `eras: N passed, M failed`; exit status 1 on any failure.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js';
import { CreateMessageRequestSchema, ElicitRequestSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from '@modelcontextprotocol/client';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const env = (k) => {
    const v = process.env[k];
    if (!v) throw new Error(`eras.mjs: ${k} is not set`);
    return v;
};
const GW = new URL(env('GW_URL'));
const TOKEN = env('TOKEN');
const USER_SUB = env('USER_SUB');
const ACT_SUB = env('ACT_SUB');
const DENIED = ['legacy_test_error_handling', 'modern_test_error_handling'];

// Checks Warden does not pass yet: `check name<TAB>reason` a line in known-gaps.txt. A listed
// check fails as KNOWN-GAP without failing the run; one that passes fails it as STALE-GAP.
const knownGaps = new Map(readFileSync(new URL('./known-gaps.txt', import.meta.url), 'utf8').split('\n')
    .filter((l) => l.trim() && !l.startsWith('#')).map((l) => l.split('\t')).map(([k, ...v]) => [k.trim(), v.join(' ')]));
let passed = 0;
let failed = 0;
let gaps = 0;
const checked = new Set();
function check(name, ok, why = '') {
    checked.add(name);
    if (ok && knownGaps.has(name)) {
        failed++;
        console.log(`FAIL STALE-GAP ${name}: passes now; remove it from known-gaps.txt`);
    } else if (ok) {
        passed++;
        console.log(`PASS ${name}`);
    } else if (knownGaps.has(name)) {
        gaps++;
        console.log(`KNOWN-GAP ${name}: ${why}`);
    } else {
        failed++;
        console.log(`FAIL ${name}: ${why}`);
    }
}
async function attempt(name, fn) {
    try {
        return await fn();
    } catch (e) {
        check(name, false, `threw ${e?.code ?? ''} ${e?.message ?? e}`);
        return undefined;
    }
}
const auth = { headers: { Authorization: `Bearer ${TOKEN}` } };
const text = (r) => (r?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('');

/** Call a tool; the error's message for a JSON-RPC error, or the text of an isError result. */
async function denial(client, name) {
    try {
        const r = await client.callTool({ name, arguments: {} });
        return r?.isError ? { kind: 'isError', message: text(r) } : { kind: 'result', message: text(r) };
    } catch (e) {
        return { kind: 'error', code: e?.code, message: String(e?.message ?? e).replace(/^MCP error -?\d+: /, '') };
    }
}

/** The common part of both clients' checks; returns the denial messages seen. */
async function exercise(era, client) {
    const calls = [];
    const tools = await attempt(`${era}: tools/list`, () => client.listTools());
    const names = new Set((tools?.tools ?? []).map((t) => t.name));
    for (const t of ['legacy_test_simple_text', 'modern_test_simple_text', 'legacy_test_image_content', 'modern_test_image_content']) {
        check(`${era}: tools/list shows ${t}`, names.has(t), `got ${[...names].slice(0, 8).join(', ')}…`);
    }
    for (const up of ['legacy', 'modern']) {
        const r = await attempt(`${era} -> ${up}: test_simple_text`, () => client.callTool({ name: `${up}_test_simple_text`, arguments: {} }));
        if (r) {
            calls.push(`${up}_test_simple_text`);
            check(`${era} -> ${up}: test_simple_text result`, text(r) === 'This is a simple text response for testing.', JSON.stringify(r).slice(0, 200));
        }
        const img = await attempt(`${era} -> ${up}: test_image_content`, () => client.callTool({ name: `${up}_test_image_content`, arguments: {} }));
        if (img) {
            calls.push(`${up}_test_image_content`);
            const c = img.content?.[0];
            check(`${era} -> ${up}: image content intact`, c?.type === 'image' && c?.mimeType === 'image/png' && c?.data?.startsWith('iVBORw0KGgo'), JSON.stringify(c).slice(0, 200));
        }
    }
    const denials = [];
    for (const t of DENIED) {
        const d = await denial(client, t);
        check(`${era}: ${t} denied by policy`, d.kind !== 'result' && /eras test policy/.test(d.message), JSON.stringify(d));
        denials.push(d.message);
        calls.push(t);
    }
    return { denials, calls };
}

// --- the 2025-11-25 client ---------------------------------------------------------------------
const legacy = new LegacyClient({ name: 'eras-legacy-client', version: '1.0.0' }, { capabilities: { elicitation: {} } });
let legacyElicited = 0;
legacy.setRequestHandler(ElicitRequestSchema, async () => {
    legacyElicited++;
    return { action: 'accept', content: { name: 'Alice', response: 'Alice' } };
});
const legacyTransport = new LegacyTransport(GW, { requestInit: auth });
await legacy.connect(legacyTransport);
check('legacy client negotiated 2025-11-25', legacyTransport.protocolVersion === '2025-11-25', `got ${legacyTransport.protocolVersion}`);
const L = await exercise('legacy client', legacy);
// Bridged elicitation: the session client's own upstream asks during the call (elicitation/create
// on the call's stream), and the modern upstream answers input_required, which Warden must turn
// into an elicitation/create for this client and retry with its answer.
const le = await attempt('legacy client -> legacy: elicitation during the call', () => legacy.callTool({ name: 'legacy_test_elicitation', arguments: { message: 'Name?' } }));
if (le) {
    L.calls.push('legacy_test_elicitation');
    check('legacy client -> legacy: elicitation relayed', legacyElicited === 1 && /action=accept/.test(text(le)), `elicited ${legacyElicited}: ${text(le).slice(0, 200)}`);
}
const lm = await attempt('legacy client -> modern: call of the input_required tool', () => legacy.callTool({ name: 'modern_test_input_required_result_elicitation', arguments: {} }));
L.calls.push('modern_test_input_required_result_elicitation'); // a call was made (and audited) whatever its outcome
check('legacy client -> modern: input_required bridged into elicitation/create', lm !== undefined && legacyElicited === 2 && text(lm) === 'Hello, Alice!', `elicited ${legacyElicited - 1} time(s): ${JSON.stringify(lm ?? null).slice(0, 200)}`);
await legacy.close();

// --- the 2026-07-28 client ---------------------------------------------------------------------
const modern = new ModernClient(
    { name: 'eras-modern-client', version: '1.0.0' },
    { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: { pin: '2026-07-28' } } }
);
let elicited = 0;
modern.setRequestHandler('elicitation/create', async () => {
    elicited++;
    return { action: 'accept', content: { name: 'Alice' } };
});
await modern.connect(new ModernTransport(GW, { requestInit: auth }));
check('modern client negotiated 2026-07-28', modern.getNegotiatedProtocolVersion() === '2026-07-28', `got ${modern.getNegotiatedProtocolVersion()} (${modern.getProtocolEra()})`);
const M = await exercise('modern client', modern);
// MRTR: the modern upstream answers input_required (elicitation); the SDK fulfils it and retries.
const mrtr = await attempt('modern client -> modern: MRTR elicitation', () => modern.callTool({ name: 'modern_test_input_required_result_elicitation', arguments: {} }));
if (mrtr) {
    M.calls.push('modern_test_input_required_result_elicitation', 'modern_test_input_required_result_elicitation');
    check('modern client -> modern: MRTR relayed (input_required, then the retry with inputResponses)', elicited === 1 && text(mrtr) === 'Hello, Alice!', `elicited ${elicited}, result ${JSON.stringify(mrtr).slice(0, 200)}`);
}
// Bridged the other way: the legacy upstream sends elicitation/create during the call; Warden must
// give the modern client an input_required result and finish the call on its retry.
const ml = await attempt('modern client -> legacy: call of the eliciting tool', () => modern.callTool({ name: 'legacy_test_elicitation', arguments: { message: 'Name?' } }));
M.calls.push('legacy_test_elicitation');
// Its retry with the input resumed the parked call: a record of its own, no second tools/call upstream.
M.resumed = ml ? ['legacy_test_elicitation'] : [];
check('modern client -> legacy: elicitation bridged into input_required', ml !== undefined && elicited === 2 && /action=accept/.test(text(ml)), `elicited ${elicited - 1} time(s): ${JSON.stringify(ml ?? null).slice(0, 200)}`);
await modern.close();
// The same denials, raw: what Warden sends a 2026-07-28 client (its text, even where the SDK
// refuses the result).
const rawDenials = [];
for (const tool of DENIED) {
    const raw = await attempt(`modern client: raw denied tools/call ${tool}`, async () => {
        const r = await fetch(GW, { method: 'POST', headers: { ...auth.headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream',
            'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': tool },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: {},
            _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } } }) });
        return { status: r.status, body: await r.text() };
    });
    M.calls.push(tool);
    const m = raw?.body.match(/\{.*\}/s);
    const body = m ? JSON.parse(m[0]) : {};
    rawDenials.push(body.error?.message ?? text(body.result));
    check(`modern client: the denial of ${tool} is a 2026-07-28 result (resultType) or error`, body.error !== undefined || body.result?.resultType !== undefined, `HTTP ${raw?.status}: ${raw?.body.slice(0, 300)}`);
}

// --- bad input: every -32020 case gets HTTP 400 and nothing is forwarded ------------------------
// test_header_param is called only by these requests, all malformed, so neither upstream may
// ever see it (checked with the upstreams' logs below).
{
    const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} };
    const send = async (tool, headers, args = { region: 'eu-west' }) => {
        const r = await fetch(GW, { method: 'POST', headers: { ...auth.headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
            body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: tool, arguments: args, _meta: meta } }) });
        const body = await r.text();
        let code;
        try { code = JSON.parse(body.match(/\{.*\}/s)?.[0] ?? '{}').error?.code; } catch { code = undefined; }
        return { status: r.status, code, body: body.slice(0, 200) };
    };
    for (const up of ['legacy', 'modern']) {
        const tool = `${up}_test_header_param`;
        const ok = { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': tool, 'mcp-param-region': 'eu-west' };
        const cases = [
            ['missing MCP-Protocol-Version', { ...ok, 'mcp-protocol-version': undefined }],
            ['MCP-Protocol-Version of a legacy revision (2025-11-25) with 2026-07-28 _meta', { ...ok, 'mcp-protocol-version': '2025-11-25' }],
            ['missing Mcp-Method', { ...ok, 'mcp-method': undefined }],
            ['mismatched Mcp-Name', { ...ok, 'mcp-name': `${up}_test_simple_text` }],
            ['missing Mcp-Param-Region', { ...ok, 'mcp-param-region': undefined }],
            ['mismatched Mcp-Param-Region', { ...ok, 'mcp-param-region': 'us-east' }],
            ['bad Base64 in Mcp-Param-Region', { ...ok, 'mcp-param-region': '=?base64?ZXUtd2VzdA?=' }],
        ];
        for (const [what, h] of cases) {
            const headers = Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined));
            const r = await send(tool, headers);
            check(`bad input -> ${up}: ${what}: HTTP 400 with -32020`, r.status === 400 && r.code === -32020, `HTTP ${r.status}, code ${r.code}: ${r.body}`);
        }
    }
}

// --- the same policy denial in both eras --------------------------------------------------------
for (let i = 0; i < DENIED.length; i++) {
    check(`denial text of ${DENIED[i]} identical in both eras`, L.denials[i] === rawDenials[i], `legacy '${L.denials[i]}' vs modern '${rawDenials[i]}'`);
}

// --- delegation tokens at the upstreams ---------------------------------------------------------
const jwks = createRemoteJWKSet(new URL(env('JWKS_URL')));
const seen = readFileSync(env('AUTH_LOG'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const toolCalls = seen.filter((s) => s.method === 'tools/call');
const allowed = { legacy: 0, modern: 0 };
for (const c of [...L.calls, ...M.calls]) if (!DENIED.includes(c)) allowed[c.split('_')[0]]++;
for (const era of ['legacy', 'modern']) {
    const mine = toolCalls.filter((s) => s.era === era);
    check(`${era} upstream: no denied call reached it`, !mine.some((s) => s.name === 'test_error_handling'), mine.map((s) => s.name).join(', '));
    check(`${era} upstream: no call with bad headers reached it`, !mine.some((s) => s.name === 'test_header_param'), mine.map((s) => s.name).join(', '));
    check(`${era} upstream: at least one tools/call per allowed call (${allowed[era]})`, mine.length >= allowed[era], `got ${mine.length}`);
    if (era === 'legacy') {
        // The eliciting tool was called once by each client; the modern client's retry resumed
        // its parked call and must not have sent the call again.
        const elicit = mine.filter((s) => s.name === 'test_elicitation').length;
        check('legacy upstream: the parked call ran once (test_elicitation: one tools/call per client)', elicit === 2, `got ${elicit}`);
    }
    let good = 0;
    const bad = [];
    for (const s of mine) {
        const tok = s.authorization?.replace(/^Bearer /, '');
        if (!tok || tok === TOKEN) {
            bad.push(tok ? "the user's own token" : 'no token');
            continue;
        }
        try {
            const { payload } = await jwtVerify(tok, jwks, { typ: 'at+jwt' });
            const life = payload.exp - payload.iat;
            if (payload.sub === USER_SUB && payload.act?.sub === ACT_SUB && life > 0 && life <= 5) good++;
            else bad.push(`sub ${payload.sub}, act ${JSON.stringify(payload.act)}, life ${life} s`);
        } catch (e) {
            bad.push(`does not verify: ${e.message}`);
        }
    }
    check(`${era} upstream: every tools/call carried a delegation token (sub user, act Warden, <= 5 s)`, mine.length > 0 && good === mine.length, bad.slice(0, 3).join('; '));
}

// --- audit: one record per call, in call order, naming both revisions -------------------------
const dir = env('AUDIT_DIR');
const readAudit = () => readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)))
    .filter((r) => r.method === 'tools/call');
// The writer flushes per batch: give the last calls' records up to 3 s to land.
const expected = L.calls.length + M.calls.length + 14;
let records = readAudit();
for (let i = 0; i < 30 && records.length < expected; i++) {
    await new Promise((r) => setTimeout(r, 100));
    records = readAudit();
}
// The requests refused for bad headers are audited too (rejected input); they are not calls.
const rejected = records.filter((r) => String(r.tool ?? '').endsWith('_test_header_param'));
check('audit: the 14 requests refused for bad headers are recorded', rejected.length === 14, `got ${rejected.length}`);
records = records.filter((r) => !rejected.includes(r));
// Records are written per call but not necessarily in call order (shards): match them as multisets.
const calls = [...L.calls.map((t) => ['legacy client', '2025-11-25', t]), ...[...M.calls, ...(M.resumed ?? [])].map((t) => ['modern client', '2026-07-28', t])];
const perTool = (list, f) => list.reduce((m, x) => m.set(f(x), (m.get(f(x)) ?? 0) + 1), new Map());
const wantTools = perTool(calls, (c) => c[2]);
const gotTools = perTool(records, (r) => r.tool);
const diff = [...new Set([...wantTools.keys(), ...gotTools.keys()])].filter((t) => wantTools.get(t) !== gotTools.get(t));
check(`audit: one tools/call record per call (${calls.length})`, diff.length === 0, diff.map((t) => `${t}: ${gotTools.get(t) ?? 0} records for ${wantTools.get(t) ?? 0} calls`).join('; '));
const upstreamRevision = { legacy: /^2025-/, modern: /^2026-07-28$/ };
for (const [who, rev] of [['legacy client', '2025-11-25'], ['modern client', '2026-07-28']]) {
    for (const up of ['legacy', 'modern']) {
        for (const denied of [false, true]) {
            const mine = calls.filter((c) => c[0] === who && c[2].startsWith(`${up}_`) && DENIED.includes(c[2]) === denied);
            if (mine.length === 0) continue;
            const named = records.filter((r) => mine.some((c) => c[2] === r.tool) && r.protocol === rev && upstreamRevision[up].test(r.upstream_protocol ?? ''));
            const sample = records.find((r) => mine.some((c) => c[2] === r.tool) && r.protocol !== '2025-11-25' && r.protocol !== '2026-07-28');
            check(`audit: ${who} -> ${up}${denied ? ' (denied)' : ''}: records name protocol ${rev} and the upstream's revision`, named.length === mine.length,
                `${named.length} of ${mine.length} records do${sample ? `; e.g. ${sample.tool}: protocol ${sample.protocol}, upstream_protocol ${sample.upstream_protocol}` : ''}`);
        }
    }
}
const legacyRevs = [...new Set(records.filter((r) => r.upstream === 'legacy' && r.upstream_protocol).map((r) => r.upstream_protocol))];
console.log(`note: Warden speaks ${legacyRevs.join(', ')} to the 2025-11-25 fixture (audit upstream_protocol)`);

// --- a request the legacy upstream sends outside any call ---------------------------------------
// The 2025-11-25 client's GET stream carries it (its id made the gateway's), and the answer the
// client posts goes back to the upstream's session with the upstream's own id.
{
    const sc = new LegacyClient({ name: 'eras-sampling-client', version: '1.0.0' }, { capabilities: { sampling: {} } });
    let sampled = 0;
    let callEnded = false;
    let outside = false;
    sc.setRequestHandler(CreateMessageRequestSchema, async (req) => {
        sampled++;
        outside = callEnded;
        const prompt = req.params.messages?.[0]?.content?.text;
        return { role: 'assistant', content: { type: 'text', text: prompt === '2+2?' ? 'four' : `unexpected prompt ${prompt}` }, model: 'eras' };
    });
    await sc.connect(new LegacyTransport(GW, { requestInit: auth }));
    const r = await attempt('outside a call: tools/call legacy_test_sampling_outside_call', () => sc.callTool({ name: 'legacy_test_sampling_outside_call', arguments: { prompt: '2+2?' } }));
    callEnded = true;
    let answer = 'pending';
    for (let i = 0; i < 40 && r && answer === 'pending'; i++) {
        await new Promise((res) => setTimeout(res, 250));
        const a = await attempt('outside a call: tools/call legacy_test_sampling_outside_call_answer', () => sc.callTool({ name: 'legacy_test_sampling_outside_call_answer', arguments: {} }));
        answer = a ? text(a) : 'failed';
    }
    check('outside a call: the legacy upstream\'s sampling/createMessage reached the 2025-11-25 client on its GET stream, and its answer reached the upstream', sampled === 1 && outside && answer === 'four', `sampled ${sampled} time(s), after the call: ${outside}, the upstream got: ${answer}`);
    await sc.close();
}

// --- a 2026-07-28 subscription to a legacy upstream's resource -----------------------------------
// listen({resourceSubscriptions}) is decided as resources/subscribe in the user's upstream
// session; the update the fixture sends on that session's GET stream reaches the listen stream.
{
    const rc = new ModernClient({ name: 'eras-resource-listener', version: '1.0.0' }, { capabilities: {}, versionNegotiation: { mode: { pin: '2026-07-28' } } });
    const updated = [];
    rc.setNotificationHandler('notifications/resources/updated', (n) => void updated.push(n.params?.uri));
    await rc.connect(new ModernTransport(GW, { requestInit: auth }));
    const listed = await attempt('resource subscription: resources/list', () => rc.listResources());
    const watched = (listed?.resources ?? []).map((r) => r.uri).find((u) => /^warden:\/\/legacy\/test:\/\/watched-resource$/.test(u) || u === 'test://watched-resource');
    const unknown = 'warden://nowhere/test://watched-resource';
    const sub = watched && await attempt('resource subscription: subscriptions/listen', () => rc.listen({ resourceSubscriptions: [watched, unknown] }));
    const honoured = sub?.honoredFilter?.resourceSubscriptions ?? [];
    check('resource subscription: the 2026-07-28 client\'s listen acknowledges the legacy upstream\'s resource and not an unknown one', honoured.length === 1 && honoured[0] === watched, `asked ${watched}, ${unknown}; acknowledged ${JSON.stringify(sub?.honoredFilter ?? null)}`);
    if (sub) {
        await new Promise((r) => setTimeout(r, 600)); // the upstream session's GET stream opens
        await attempt('resource subscription: tools/call legacy_test_touch_watched_resource', () => rc.callTool({ name: 'legacy_test_touch_watched_resource', arguments: {} }));
        for (let i = 0; i < 40 && updated.length === 0; i++) await new Promise((r) => setTimeout(r, 125));
        check('resource subscription: the legacy upstream\'s notifications/resources/updated reached the listen stream in the gateway\'s naming', updated.length >= 1 && updated.every((u) => u === watched), `got ${JSON.stringify(updated)}`);
        await sub.close();
    }
    await rc.close();
}

// --- list_changed after a policy reload (last: it waits, and the tokens above are short-lived) ----------------------------------------------------------
// Both clients stay connected (the session client's GET stream, the stateless client's
// subscriptions/listen); the policy then hides legacy_test_audio_content; each must be told.
{
    const hidden = 'legacy_test_audio_content';
    let legacyNotified = 0;
    let modernNotified = 0;
    const lc = new LegacyClient({ name: 'eras-legacy-listener', version: '1.0.0' }, { capabilities: {} });
    lc.setNotificationHandler(ToolListChangedNotificationSchema, async () => void legacyNotified++);
    const lcTransport = new LegacyTransport(GW, { requestInit: auth });
    await lc.connect(lcTransport);
    const mc = new ModernClient({ name: 'eras-modern-listener', version: '1.0.0' }, {
        capabilities: {}, versionNegotiation: { mode: { pin: '2026-07-28' } },
        listChanged: { tools: { autoRefresh: false, debounceMs: 0, onChanged: () => void modernNotified++ } }
    });
    await mc.connect(new ModernTransport(GW, { requestInit: auth }));
    const before = new Set(((await attempt('list_changed: tools/list before the reload', () => lc.listTools()))?.tools ?? []).map((t) => t.name));
    check(`list_changed: ${hidden} listed before the reload`, before.has(hidden), [...before].join(', '));
    await new Promise((r) => setTimeout(r, 1000)); // let the GET stream and the subscription open
    const cfg = env('CONFIG');
    const text0 = readFileSync(cfg, 'utf8');
    writeFileSync(cfg, text0.replace('[legacy_test_error_handling, modern_test_error_handling]', `[legacy_test_error_handling, modern_test_error_handling, ${hidden}]`));
    const reload = await fetch(new URL('/admin/reload', env('ADMIN_URL')), { method: 'POST' });
    check('list_changed: POST /admin/reload accepted', reload.ok, `HTTP ${reload.status}: ${(await reload.text()).slice(0, 200)}`);
    for (let i = 0; i < 50 && (legacyNotified === 0 || modernNotified === 0); i++) await new Promise((r) => setTimeout(r, 100));
    const after = new Set(((await attempt('list_changed: tools/list after the reload', () => lc.listTools()))?.tools ?? []).map((t) => t.name));
    check(`list_changed: ${hidden} hidden after the reload`, !after.has(hidden), 'still listed');
    // What the two streams look like on the wire, for the failure messages.
    const peek = async (init) => {
        const ctl = new AbortController();
        setTimeout(() => ctl.abort(), 1000);
        try {
            const r = await fetch(GW, { ...init, signal: ctl.signal });
            let body = '';
            try {
                for await (const chunk of r.body) body += Buffer.from(chunk).toString();
            } catch { /* aborted: a stream that stays open */ }
            return `HTTP ${r.status} ${r.headers.get('content-type') ?? ''} ${body.slice(0, 160).replace(/\s+/g, ' ')}`;
        } catch (e) {
            return `fetch failed: ${e.message}`;
        }
    };
    const getStream = await peek({ method: 'GET', headers: { ...auth.headers, accept: 'text/event-stream', 'mcp-session-id': lcTransport.sessionId ?? '', 'mcp-protocol-version': '2025-11-25' } });
    const listen = await peek({ method: 'POST', headers: { ...auth.headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'subscriptions/listen' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'subscriptions/listen', params: { notifications: { toolsListChanged: true }, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} } } }) });
    check('list_changed: the 2025-11-25 client got notifications/tools/list_changed on its GET stream', legacyNotified > 0, `none within 5 s; GET /mcp on the session: ${getStream}`);
    check('list_changed: the 2026-07-28 client got notifications/tools/list_changed on subscriptions/listen', modernNotified > 0, `none within 5 s; subscriptions/listen: ${listen}`);
    await lc.close();
    await mc.close();
}

for (const k of knownGaps.keys()) {
    if (!checked.has(k) && !k.startsWith('python client:')) { // those are run.sh's (py-modern.py)
        failed++;
        console.log(`FAIL STALE-GAP ${k}: no such check any more; remove it from known-gaps.txt`);
    }
}
console.log(`eras: ${passed} passed, ${failed} failed, ${gaps} known gaps`);
process.exit(failed ? 1 : 0);
