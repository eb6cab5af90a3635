// The operator console in Debian's headless Chromium (driven by puppeteer-core; no browser is
// ever downloaded), against `warden demo` under tests/console/k6-console.js's load.
//
//   node browser.mjs check ADMIN_URL OUT_DIR    assertions + screenshots (exit 1 on any failure)
//   node browser.mjs shot ADMIN_URL FILE        one screenshot of the console (README image)
//   node browser.mjs hold ADMIN_URL SECONDS     keep the console open (cost measurement)
import puppeteer from 'puppeteer-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [mode, adminUrl, arg] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'warden-console-chromium-'));
const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--user-data-dir=${profile}`, '--window-size=1400,1000'],
  defaultViewport: { width: 1400, height: 1000 },
});
let failed = 0, passed = 0;
const check = (ok, what, detail) => {
  if (ok) { passed++; console.log(`PASS  ${what}`); } else { failed++; console.log(`FAIL  ${what}${detail ? ': ' + detail : ''}`); }
};
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${adminUrl}/console`, { waitUntil: 'load' });
  // Two polls done and 15 minutes' worth of chart points loaded.
  await page.waitForFunction(() => Number(document.body.dataset.ticks || 0) >= 2 && Number(document.body.dataset.chartPoints || 0) > 0, { timeout: 20000 });
  if (mode === 'hold') {
    await new Promise((r) => setTimeout(r, 1000 * Number(arg)));
  } else if (mode === 'shot') {
    // The whole page with one allowed call's delegation chain open.
    await page.select('#f-decision', 'allow');
    await page.waitForFunction(() => document.querySelector('tr.dec[data-decision="allow"]'), { timeout: 10000 });
    await page.click('tr.dec[data-decision="allow"]');
    await page.waitForSelector('#detail .chain', { timeout: 10000 });
    await page.screenshot({ path: arg, fullPage: true });
  } else {
    const out = arg;
    fs.mkdirSync(out, { recursive: true });
    const topo = await page.evaluate(() => ({
      nodes: [...document.querySelectorAll('#topo .node')].map((g) => ({ id: g.dataset.id, kind: g.dataset.kind, health: g.dataset.health })),
      edges: [...document.querySelectorAll('#topo .edge')].map((g) => ({ from: g.dataset.from, to: g.dataset.to, rate: Number(g.dataset.rate), allow: Number(g.dataset.allow), deny: Number(g.dataset.deny), error: Number(g.dataset.error) })),
    }));
    const node = (id) => topo.nodes.find((n) => n.id === id);
    const edge = (f, t) => topo.edges.find((e) => e.from === f && e.to === t) || { rate: 0, allow: 0, deny: 0, error: 0 };
    for (const id of ['gateway', 'client:loadtest', 'upstream:enterprise-ledger', 'upstream:employee-directory', 'token_service', 'audit']) {
      check(!!node(id), `topology node ${id}`, JSON.stringify(topo.nodes));
    }
    check(topo.nodes.some((n) => n.kind === 'idp' && n.health === 'ok'), 'topology node for the IdP, JWKS fresh', JSON.stringify(topo.nodes));
    check(node('audit') && node('audit').health === 'ok', 'audit sink node healthy');
    const cg = edge('client:loadtest', 'gateway');
    const gl = edge('gateway', 'upstream:enterprise-ledger');
    const gd = edge('gateway', 'upstream:employee-directory');
    const gt = edge('gateway', 'token_service');
    check(cg.rate > 0 && gl.rate > 0 && gd.rate > 0 && gt.rate > 0, 'edges client→Warden, Warden→ledger, Warden→directory, Warden→token service have non-zero rates',
      JSON.stringify({ cg, gl, gd, gt }));
    // Denies and errors apart: the ledger only gets policy denials, the directory only 404s.
    check(gl.deny > 0 && gl.error === 0, 'Warden→ledger: denies counted, no errors', JSON.stringify(gl));
    check(gd.error > 0 && gd.deny === 0, 'Warden→directory: errors counted, no denies', JSON.stringify(gd));
    const shown = await page.evaluate(() => ({ allow: Number(document.getElementById('n-allow').textContent), deny: Number(document.getElementById('n-deny').textContent), error: Number(document.getElementById('n-error').textContent) }));
    // The load's mix: per 10 calls 3 refused (2 policy denials + 1 bad token) and 1 error.
    const ratio = shown.deny / Math.max(1, shown.error);
    check(shown.allow > 0 && shown.error > 0 && ratio > 2 && ratio < 4, `denies (${shown.deny}) and errors (${shown.error}) counted apart, about 3:1 as sent`, JSON.stringify(shown));
    const charts = await page.evaluate(() => ({
      canvases: document.querySelectorAll('#charts canvas').length,
      calls: charts.calls.data[1].filter((v) => v > 0).length,
      deny: charts.outcomes.data[2].filter((v) => v > 0).length,
      error: charts.outcomes.data[3].filter((v) => v > 0).length,
      p99: charts.latency.data[2].filter((v) => v !== null && v > 0).length,
      hit: charts.cache.data[1].filter((v) => v !== null).length,
      points: charts.calls.data[0].length,
    }));
    check(charts.canvases >= 4, 'four uPlot charts drawn', JSON.stringify(charts));
    check(charts.points >= 60 && charts.calls >= 5 && charts.deny >= 3 && charts.error >= 3 && charts.p99 >= 3 && charts.hit >= 3,
      'charts have points: calls/s, denies, errors, p99 added latency, cache hit rate', JSON.stringify(charts));
    const tools = await page.evaluate(() => [...document.querySelectorAll('#tools tr')].map((tr) => [...tr.children].map((td) => td.textContent)));
    const pii = tools.find((r) => r[1] === 'enterprise_ledger_getCustomerPII');
    const emp = tools.find((r) => r[1] === 'employee_directory_getEmployee');
    check(pii && Number(pii[3]) > 0 && Number(pii[4]) === 0 && pii[6].includes('@orchestrator.lab'), 'tool table: getCustomerPII denies, no errors, last caller', JSON.stringify(pii));
    check(emp && Number(emp[4]) > 0 && Number(emp[3]) === 0 && emp[5] !== '—', 'tool table: getEmployee errors, no denies, p99', JSON.stringify(emp));
    await page.screenshot({ path: path.join(out, 'console.png'), fullPage: true });

    // Click a denied decision: the chain shows the policy, the reason, and no minted token.
    const pick = async (decision, tool) => {
      await page.select('#f-decision', decision);
      await page.$eval('#f-tool', (e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }, tool);
      await page.waitForFunction((d, t) => {
        const rows = [...document.querySelectorAll('tr.dec')];
        return rows.length > 0 && rows.every((r) => r.dataset.decision === d && r.children[4].textContent.includes(t));
      }, { timeout: 10000 }, decision, tool);
      const seq = await page.$eval('tr.dec', (r) => Number(r.dataset.seq));
      await page.click(`tr.dec[data-seq="${seq}"]`);
      await page.waitForFunction((s) => { const c = document.querySelector('#detail .chain'); return c && Number(c.dataset.seq) === s; }, { timeout: 10000 }, seq);
      const text = (id) => page.$eval('#detail-' + id, (e) => e.textContent).catch(() => null);
      return { seq, decision: await text('decision'), reason: await text('reason'), policies: await text('policies'), jti: await text('jti'), aud: await text('aud'), scope: await text('scope'),
        sub: await text('sub'), scopes: await text('scopes'), act: await text('act'), trace: await text('trace'), status: await text('status'),
        verified: await page.$eval('#detail-verified', (e) => e.dataset.verified) };
    };
    const d = await pick('deny', 'getCustomerPII');
    check(d.decision === 'deny' && d.reason.includes('pii:read') && d.policies.includes('getCustomerPII') && d.jti === 'no token minted' && d.aud === '—',
      'denied decision: chain shows policy id, reason, no minted token', JSON.stringify(d));
    check(d.sub === 'john.mcclane@orchestrator.lab' && d.scopes === 'mcp:tools', 'denied decision: user hop shows sub and the inbound scopes', JSON.stringify(d));
    check(d.verified === 'true', 'denied decision: record verified on disk and linked in the hash chain', JSON.stringify(d));
    await (await page.$('#detail-section')).screenshot({ path: path.join(out, 'detail-deny.png') });
    const a = await pick('allow', 'listAccounts');
    check(a.decision === 'allow' && a.aud === 'https://enterprise-ledger.orchestrator.lab/' && a.scope === 'ledger:ListAccounts',
      'allowed decision: chain shows the minted token\'s aud and scope', JSON.stringify(a));
    check(/^[0-9a-f]{16,}$/.test(a.jti) && a.status === '200' && /^[0-9a-f]{32}$/.test(a.trace), 'allowed decision: minted jti, upstream status 200, trace id', JSON.stringify(a));
    check(a.verified === 'true', 'allowed decision: record verified', JSON.stringify(a));
    await (await page.$('#detail-section')).screenshot({ path: path.join(out, 'detail-allow.png') });
    // A hidden tab stops polling (Page Visibility API, as a browser reports a background tab);
    // visible again, it polls at once.
    let polls = 0;
    page.on('request', (r) => { if (r.url().includes('/console/state.json')) polls++; });
    await page.evaluate(() => Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' }));
    await new Promise((r) => setTimeout(r, 2500));
    polls = 0;
    await new Promise((r) => setTimeout(r, 5000));
    const hiddenPolls = polls;
    await page.evaluate(() => { Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'visible' }); document.dispatchEvent(new Event('visibilitychange')); });
    await new Promise((r) => setTimeout(r, 1000));
    check(hiddenPolls === 0 && polls > 0, `no polls while hidden (${hiddenPolls} in 5 s), polling again once visible (${polls - hiddenPolls})`);
    check(errors.length === 0, 'no script errors in the page', errors.join(' | '));
  }
} catch (e) {
  check(false, 'console test ran to the end', e.stack || String(e));
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
if (mode === 'check') console.log(`console-browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
