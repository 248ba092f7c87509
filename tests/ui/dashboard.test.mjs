// The dashboard in a real browser: Debian's Chromium, headless, driven by
// playwright-core, against a real `caisson serve` that tests/all/ui.rs
// starts and seeds. Each test asserts what a person would see on screen.
//
// Environment (set by tests/all/ui.rs):
//   CAISSON_UI_URL        the server, http://127.0.0.1:PORT (tokens configured)
//   CAISSON_UI_OPEN_URL   a second server with no tokens (open loopback mode)
//   CAISSON_UI_TOKEN_A/B  tokens of tenants `alpha` and `beta`, each with
//                         modules `hello`, `slow-log`, `busy` and `trap`
//   CAISSON_UI_ADMIN      the admin token
//   CAISSON_UI_UPLOAD     a component to upload (echo-params.wasm)
//   CAISSON_UI_RESULTS    a JSON file to write measurements to
//   CAISSON_UI_ARTIFACTS  where a failing test leaves its screenshot
//   CAISSON_UI_SCREENSHOTS  if set, where the README's screenshots go
//   CAISSON_CHROMIUM      the browser (default /usr/bin/chromium)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/all/ui.rs`);
  return value;
};

const URL_ = env('CAISSON_UI_URL');
const OPEN_URL = process.env.CAISSON_UI_OPEN_URL;
const TOKEN_A = env('CAISSON_UI_TOKEN_A');
const TOKEN_B = env('CAISSON_UI_TOKEN_B');
const ARTIFACTS = process.env.CAISSON_UI_ARTIFACTS ?? mkdtempSync(join(tmpdir(), 'caisson-ui-'));
const SCREENSHOTS = process.env.CAISSON_UI_SCREENSHOTS;
const results = {};

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CAISSON_CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
  if (process.env.CAISSON_UI_RESULTS) writeFileSync(process.env.CAISSON_UI_RESULTS, JSON.stringify(results, null, 2));
});

/** Calls the API as a script would, with `token`. */
async function call(method, path, token, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(URL_ + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

const submit = (token, run) => call('POST', '/v1/runs', token, run);

/**
 * A fresh browser context and page (nothing shared between tests: no
 * sessionStorage, no cache), watched for dialogs, page errors and requests.
 * A failure leaves a screenshot in ARTIFACTS.
 */
async function withPage(name, body, { base = URL_ } = {}) {
  // UTC, so that times typed into the pages mean the same on any machine.
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, timezoneId: 'UTC' });
  const page = await context.newPage();
  const seen = { dialogs: [], errors: [], requests: [], console: [] };
  page.on('dialog', async (dialog) => {
    seen.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  page.on('pageerror', (e) => seen.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') seen.console.push(m.text());
  });
  page.on('request', (r) => seen.requests.push(r.url()));
  try {
    await body(page, seen, base);
    assert.deepEqual(seen.dialogs, [], 'no dialog opened');
    assert.deepEqual(seen.errors, [], 'no uncaught error on the page');
  } catch (e) {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await context.close();
  }
}

async function signIn(page, token, base = URL_) {
  await page.goto(`${base}/ui/`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Runs' }).waitFor();
}

async function screenshot(page, name) {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

const badgeOf = (page, id) => page.locator(`tr[data-run-id="${id}"] .state .badge`);

test('sign in with a token, then a submitted run appears and turns succeeded without a reload', async () => {
  await withPage('sign-in', async (page, seen) => {
    await page.goto(`${URL_}/ui/`);
    await page.getByRole('heading', { name: 'Sign in to Caisson' }).waitFor();
    await screenshot(page, 'sign-in');

    await page.getByLabel('API token').fill('not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token was not accepted.').waitFor();

    await page.getByLabel('API token').fill(TOKEN_A);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Runs' }).waitFor();

    // The token lives in this tab's sessionStorage and nowhere else.
    const storage = await page.evaluate(() => ({
      session: Object.keys(sessionStorage),
      local: localStorage.length,
      cookie: document.cookie,
    }));
    assert.deepEqual(storage, { session: ['caisson.token'], local: 0, cookie: '' });

    // A marker that a reload would wipe.
    await page.evaluate(() => {
      window.notReloaded = true;
    });
    const run = await submit(TOKEN_A, {
      module: 'slow-log',
      params: { lines: '5', interval_ms: '1000', message: 'first run' },
    });
    const badge = badgeOf(page, run.id);
    await badge.waitFor({ timeout: 10_000 });
    const early = await badge.textContent();
    assert.ok(['queued', 'running'].includes(early), `a new run shows queued or running, not ${early}`);
    await page.waitForFunction(
      (id) => document.querySelector(`tr[data-run-id="${id}"] .state .badge`)?.textContent === 'succeeded',
      run.id,
      { timeout: 30_000 },
    );
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');

    // No token in any URL the page asked for.
    assert.ok(seen.requests.every((u) => !u.includes(TOKEN_A)), 'the token never appears in a URL');

    // Sign out forgets it.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to Caisson' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });
});

test('a run page shows log lines as the task writes them, filters them by level, downloads the output and re-runs', async () => {
  await withPage('live-log', async (page) => {
    await signIn(page, TOKEN_A);
    const run = await submit(TOKEN_A, {
      module: 'slow-log',
      params: { lines: '8', interval_ms: '600', message: 'tick' },
    });
    await page.goto(`${URL_}/ui/#/runs/${run.id}`);
    const log = page.locator('#log');
    await log.getByText('tick 1', { exact: true }).waitFor({ timeout: 15_000 });
    // Seen while the task is still writing: some lines, not all, and the
    // run still running.
    const taskLines = log.locator('.line[data-source="task"]');
    const partial = await taskLines.count();
    assert.ok(partial >= 2 && partial < 8, `a partial log while running (${partial} lines)`);
    await page.waitForFunction(() => document.querySelector('#run-state .badge')?.textContent === 'running', null, {
      timeout: 2_000,
    });
    assert.ok((await taskLines.count()) < 8, 'still running with part of its log');
    await screenshot(page, 'run');

    await log.getByText('tick 7', { exact: true }).waitFor({ timeout: 15_000 });
    await page.getByText('the run ended succeeded; the log is complete').waitFor({ timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector('#run-state .badge')?.textContent === 'succeeded');
    assert.equal(await taskLines.count(), 8);
    assert.equal(await page.locator('#output').textContent(), 'logged 8 lines');

    // Levels: tick 0 is debug, 1 info, 2 warn, 3 error, and so on.
    await page.getByLabel('Lowest level shown').selectOption('warn');
    for (const n of [0, 1, 4, 5]) assert.equal(await log.getByText(`tick ${n}`, { exact: true }).isVisible(), false, `tick ${n} hidden`);
    for (const n of [2, 3, 6, 7]) assert.equal(await log.getByText(`tick ${n}`, { exact: true }).isVisible(), true, `tick ${n} shown`);
    await page.getByLabel('Lowest level shown').selectOption('error');
    assert.equal(await log.locator('.line[data-source="task"]:not([hidden])').count(), 2);
    await page.getByLabel('Lowest level shown').selectOption('trace');
    assert.equal(await log.locator('.line[data-source="task"]:not([hidden])').count(), 8);

    // The output downloads as a file.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download output' }).click(),
    ]);
    const saved = join(ARTIFACTS, `download-${run.id}`);
    mkdirSync(ARTIFACTS, { recursive: true });
    await download.saveAs(saved);
    assert.equal(readFileSync(saved, 'utf8'), 'logged 8 lines');
    rmSync(saved);

    // Re-run: a new run, with the same params, on its own page.
    await page.getByRole('button', { name: 'Re-run' }).click();
    await page.waitForFunction((old) => !location.hash.endsWith(old), run.id);
    const again = decodeURIComponent(await page.evaluate(() => location.hash.split('/').pop()));
    assert.notEqual(again, run.id);
    await page.locator('#run-id').getByText(again).waitFor();
    await page.getByRole('cell', { name: 'tick', exact: true }).waitFor();
    await log.getByText('tick 0', { exact: true }).waitFor({ timeout: 15_000 });
    const copy = await call('GET', `/v1/runs/${again}`, TOKEN_A);
    assert.deepEqual(copy.params, run.params);
    assert.equal(copy.digest, run.digest);
  });
});

test('cancel a running run from its page', async () => {
  await withPage('cancel', async (page) => {
    await signIn(page, TOKEN_A);
    const run = await submit(TOKEN_A, { module: 'busy', params: { ms: '120000' }, timeout: '5m' });
    await page.goto(`${URL_}/ui/#/runs/${run.id}`);
    await page.waitForFunction(() => document.querySelector('#run-state .badge')?.textContent === 'running', null, {
      timeout: 15_000,
    });
    await page.getByRole('button', { name: 'Cancel run' }).click();
    await page.waitForFunction(() => document.querySelector('#run-state .badge')?.textContent === 'cancelled', null, {
      timeout: 15_000,
    });
    assert.equal(await page.getByRole('button', { name: 'Cancel run' }).count(), 0, 'no cancel button once ended');
    const after = await call('GET', `/v1/runs/${run.id}`, TOKEN_A);
    assert.equal(after.state, 'cancelled');
  });
});

test('hostile log lines, params and outputs render as text, with no dialog and no request', async () => {
  const hostile = `<img src=/pwned-img onerror=alert(1)><script>alert(2)</script>`;
  const output = `<script>fetch('/pwned-output')</script><img src=x onerror="alert(3)">`;
  await withPage('hostile', async (page, seen) => {
    await signIn(page, TOKEN_A);
    const run = await submit(TOKEN_A, {
      module: 'slow-log',
      params: { lines: '2', interval_ms: '10', message: hostile, output, '<svg onload=alert(4)>': 'name' },
    });
    await page.goto(`${URL_}/ui/#/runs/${run.id}`);
    await page.waitForFunction(() => document.querySelector('#run-state .badge')?.textContent === 'succeeded', null, {
      timeout: 20_000,
    });
    const lines = page.locator('#log .line[data-source="task"] .message');
    await lines.nth(1).waitFor();
    assert.deepEqual(await lines.allTextContents(), [`${hostile} 0`, `${hostile} 1`]);
    assert.equal(await page.locator('#output').textContent(), output);
    await page.getByRole('cell', { name: hostile }).waitFor();
    await page.getByRole('cell', { name: '<svg onload=alert(4)>' }).waitFor();
    // Nothing of it became markup: no image, no SVG, no script but the
    // page's own.
    assert.equal(await page.locator('img').count(), 0);
    assert.equal(await page.locator('svg').count(), 0);
    assert.equal(await page.locator('script').count(), 1);
    // Give an injected handler time to fire, had there been one.
    await page.waitForTimeout(500);
    assert.ok(!seen.requests.some((u) => u.includes('pwned') || u.endsWith('/x')), `no request from content: ${seen.requests}`);
    assert.deepEqual(seen.dialogs, []);
  });
});

test("tenant A's token shows nothing of tenant B's, and B's run page says not found", async () => {
  const mine = await submit(TOKEN_A, { module: 'hello', input: 'alpha' });
  const theirs = await submit(TOKEN_B, { module: 'hello', input: 'beta' });
  await withPage('tenants', async (page) => {
    await signIn(page, TOKEN_A);
    await badgeOf(page, mine.id).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator(`tr[data-run-id="${theirs.id}"]`).count(), 0);
    const shown = await page.locator('tr[data-run-id]').evaluateAll((rows) => rows.map((r) => r.dataset.runId));
    const bRuns = (await call('GET', '/v1/runs?limit=500', TOKEN_B)).runs.map((r) => r.id);
    assert.deepEqual(
      shown.filter((id) => bRuns.includes(id)),
      [],
      "none of B's runs in A's list",
    );

    await page.goto(`${URL_}/ui/#/runs/${theirs.id}`);
    await page.getByRole('heading', { name: 'Not found' }).waitFor();
    assert.equal(await page.getByText('beta').count(), 0);
  });
  // The same page with B's token shows the run: the refusal above is the
  // tenant's, not a broken page.
  await withPage('tenants-b', async (page) => {
    await signIn(page, TOKEN_B);
    await page.goto(`${URL_}/ui/#/runs/${theirs.id}`);
    await page.locator('#run-id').getByText(theirs.id).waitFor();
  });
});

test('page through 1,000 runs with the cursor, then filter by state and module', async () => {
  // Beta's runs: 1,000 of `hello`, submitted 25 at a time.
  const ids = [];
  for (let i = 0; i < 1000; i += 25) {
    const batch = Array.from({ length: 25 }, (_, j) => submit(TOKEN_B, { module: 'hello', input: `n${i + j}` }));
    ids.push(...(await Promise.all(batch)).map((r) => r.id));
  }
  // Everything beta has, as the API lists it, newest first.
  const expected = [];
  let cursor = '';
  do {
    const page = await call('GET', `/v1/runs?limit=500${cursor ? `&cursor=${cursor}` : ''}`, TOKEN_B);
    expected.push(...page.runs.map((r) => r.id));
    cursor = page.next ?? '';
  } while (cursor);
  assert.ok(expected.length >= 1000);

  await withPage('paging', async (page) => {
    await signIn(page, TOKEN_B);
    const rows = () => page.locator('tr[data-run-id]').evaluateAll((trs) => trs.map((r) => r.dataset.runId));
    const seen = [];
    for (let n = 1; ; n += 1) {
      await page.locator('#page-number').getByText(`page ${n}`, { exact: true }).waitFor();
      await page.waitForFunction((count) => document.querySelectorAll('tr[data-run-id]').length === count, Math.min(50, expected.length - seen.length));
      const shown = await rows();
      assert.deepEqual(shown, expected.slice(seen.length, seen.length + shown.length), `page ${n} continues where page ${n - 1} ended`);
      seen.push(...shown);
      const older = page.getByRole('button', { name: 'Older →' });
      if (await older.isDisabled()) break;
      await older.click();
    }
    assert.equal(seen.length, expected.length, 'every run, once');
    assert.equal(new Set(seen).size, seen.length);
    assert.ok(ids.every((id) => seen.includes(id)));

    // Back one page, then to the newest.
    const last = Math.ceil(expected.length / 50);
    await page.getByRole('button', { name: '← Newer' }).click();
    await page.locator('#page-number').getByText(`page ${last - 1}`, { exact: true }).waitFor();
    await page.getByRole('button', { name: 'Newest' }).click();
    await page.locator('#page-number').getByText('page 1', { exact: true }).waitFor();
    await badgeOf(page, expected[0]).waitFor();

    await page.getByLabel('State').selectOption('succeeded');
    await page.waitForFunction(() => location.hash.includes('state=succeeded'));
    await page.waitForFunction(() =>
      [...document.querySelectorAll('tr[data-run-id] .badge')].every((b) => b.textContent === 'succeeded'),
    );
    await page.getByLabel('Module').fill('no-such-module');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.getByText('No runs match.').waitFor();
  });
});

test('a 20-step workflow with a failing step shows it failed and its descendants skipped, and the step opens its log', async () => {
  // s01 fans out to s02..s07; `bad` (which traps) follows s02, and s08,
  // s09 and s10 follow it; s11..s19 hang off the other branches.
  const hello = { module: 'hello' };
  const steps = [{ name: 's01', run: hello }];
  for (const n of ['s02', 's03', 's04', 's05', 's06', 's07']) steps.push({ name: n, depends_on: ['s01'], run: hello });
  steps.push({ name: 'bad', depends_on: ['s02'], run: { module: 'trap' } });
  steps.push({ name: 's08', depends_on: ['bad'], run: hello });
  steps.push({ name: 's09', depends_on: ['s08', 's03'], run: hello });
  steps.push({ name: 's10', depends_on: ['s09'], run: hello });
  const parents = ['s03', 's04', 's05', 's06', 's07', 's04', 's05', 's06', 's07'];
  parents.forEach((parent, i) => steps.push({ name: `s${11 + i}`, depends_on: [parent], run: hello }));
  assert.equal(steps.length, 20);
  await call('POST', '/v1/workflows', TOKEN_A, { name: 'twenty', steps });

  await withPage('workflow', async (page) => {
    await signIn(page, TOKEN_A);
    await page.getByRole('link', { name: 'Workflows' }).click();
    await page.getByRole('link', { name: 'twenty' }).click();
    await page.getByText('No runs yet.').waitFor();
    assert.equal(await page.locator('svg.dag [data-step]').count(), 20, 'the definition drawn before any run');
    await page.getByRole('button', { name: 'Start a run' }).click();
    await page.waitForFunction(() => document.querySelector('#workflow-run-state .badge')?.textContent === 'failed', null, {
      timeout: 60_000,
    });
    const states = await page
      .locator('svg.dag [data-step]')
      .evaluateAll((nodes) => Object.fromEntries(nodes.map((n) => [n.dataset.step, n.dataset.state])));
    assert.equal(Object.keys(states).length, 20);
    assert.equal(states.bad, 'failed');
    for (const skipped of ['s08', 's09', 's10']) assert.equal(states[skipped], 'skipped', skipped);
    for (const [step, state] of Object.entries(states)) {
      if (!['bad', 's08', 's09', 's10'].includes(step)) assert.equal(state, 'succeeded', step);
    }
    // Skipped steps never ran, so they open nothing.
    assert.equal(await page.locator('svg.dag a[data-step="s08"]').count(), 0);
    await screenshot(page, 'workflow');

    await page.locator('svg.dag a[data-step="bad"]').click();
    await page.waitForFunction(() => document.querySelector('#run-state .badge')?.textContent === 'failed', null, {
      timeout: 10_000,
    });
    assert.match(await page.locator('#run-error').textContent(), /boom: deliberate trap|trap/);
    await page.locator('#log').getByText('boom: deliberate trap').waitFor({ timeout: 10_000 });
  });
});

test('a schedule shows its next five fire times, which disappear when paused; backfill starts runs', async () => {
  await call('POST', '/v1/schedules', TOKEN_A, {
    name: 'nightly',
    cron: '30 2 * * *',
    timezone: 'Europe/Paris',
    run: { module: 'hello' },
  });
  await withPage('schedule', async (page) => {
    await signIn(page, TOKEN_A);
    await page.getByRole('link', { name: 'Schedules' }).click();
    await page.getByRole('link', { name: 'nightly' }).click();
    const times = page.locator('#next-times li');
    await times.nth(4).waitFor();
    assert.equal(await times.count(), 5);
    // 02:30 in Paris is 01:30 UTC in winter, 00:30 UTC in summer.
    for (const title of await times.evaluateAll((items) => items.map((li) => li.title))) {
      assert.match(title, /T0[01]:30:00Z$/);
    }
    await screenshot(page, 'schedule');

    await page.getByRole('button', { name: 'Pause' }).click();
    await page.locator('#no-next-times').waitFor();
    assert.equal(await times.count(), 0, 'no fire times while paused');
    assert.equal(await page.locator('#schedule-state .badge').textContent(), 'paused');
    assert.equal((await call('GET', '/v1/schedules/nightly', TOKEN_A)).paused, true);
    await page.getByRole('button', { name: 'Resume' }).click();
    await times.nth(4).waitFor();

    // Browser times are UTC here (the context's time zone): three fire
    // times, 1, 2 and 3 November at 01:30 UTC.
    await page.locator('#backfill-from').fill('2026-11-01T00:00');
    await page.locator('#backfill-to').fill('2026-11-04T00:00');
    await page.getByRole('button', { name: 'Backfill' }).click();
    await page.getByText('Started 3 runs.').waitFor();
    await page.locator('tr[data-run-id]').nth(2).waitFor();
    assert.equal(await page.locator('tr[data-run-id]').count(), 3);
  });
});

test('modules: upload by file input and by drop with progress, see what uses each, and a refused delete says why', async () => {
  await withPage('modules', async (page) => {
    await signIn(page, TOKEN_A);
    await page.getByRole('link', { name: 'Modules' }).click();
    await page.locator('tr[data-module="trap"]').waitFor();
    assert.match(await page.locator('tr[data-module="trap"]').textContent(), /workflow twenty/);
    assert.match(await page.locator('tr[data-module="hello"]').textContent(), /schedule nightly/);

    await page.locator('#module-file').setInputFiles(env('CAISSON_UI_UPLOAD'));
    await page.getByText(/^Uploaded echo-params /).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator('#upload-progress').isVisible(), true);
    assert.equal(await page.locator('#upload-progress').evaluate((p) => p.value), 100);
    await page.locator('tr[data-module="echo-params"]').waitFor();
    await screenshot(page, 'modules');
    assert.ok((await call('GET', '/v1/modules/echo-params', TOKEN_A)).length === 1);

    // Dropped on the drop zone: the same path, from a drag and drop.
    const bytes = readFileSync(env('CAISSON_UI_UPLOAD')).toString('base64');
    const dropped = await page.evaluateHandle((b64) => {
      const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([data], 'Dropped_Task.wasm', { type: 'application/wasm' }));
      return transfer;
    }, bytes);
    await page.locator('#drop-zone').dispatchEvent('dragover', { dataTransfer: dropped });
    await page.locator('#drop-zone').dispatchEvent('drop', { dataTransfer: dropped });
    await page.getByText(/^Uploaded dropped_task /).waitFor({ timeout: 30_000 });
    await page.locator('tr[data-module="dropped_task"]').waitFor();

    const trap = page.locator('tr[data-module="trap"] button');
    await trap.click();
    await trap.click();
    await page.getByText('Not deleted: module trap is used by workflow twenty; remove that first').waitFor();
    assert.equal(await page.locator('tr[data-module="trap"]').count(), 1);

    const echo = page.locator('tr[data-module="echo-params"] button');
    await echo.click();
    await echo.click();
    await page.getByText(/^Deleted echo-params /).waitFor();
    await page.locator('tr[data-module="echo-params"]').waitFor({ state: 'detached' });

    // By now alpha has runs of every kind: the README's picture of the list.
    await page.getByRole('link', { name: 'Runs' }).click();
    await page.locator('tr[data-run-id]').first().waitFor();
    await screenshot(page, 'runs');
  });
});

test('admin: tenants with their grants; a token created is shown once and works, and revoked it stops', async () => {
  await withPage('admin-refused', async (page) => {
    await signIn(page, TOKEN_A);
    await page.getByRole('link', { name: 'Admin' }).click();
    await page.locator('#admin-only').waitFor();
  });
  await withPage('admin', async (page) => {
    await signIn(page, env('CAISSON_UI_ADMIN'));
    await page.getByRole('link', { name: 'Admin' }).click();
    const beta = page.locator('section[data-tenant="beta"]');
    await beta.waitFor();
    await page.locator('section[data-tenant="alpha"]').waitFor();
    assert.match(await page.locator('section[data-tenant="alpha"]').textContent(), /Object stores: data\./);
    await beta.getByRole('button', { name: 'Create a token' }).click();
    const shown = page.locator('#new-token-beta');
    await shown.waitFor();
    const token = await shown.textContent();
    assert.match(token, /^cs_[0-9a-f]{64}$/);
    const id = (await beta.locator('.notice').textContent()).match(/id ([^)]+)\)/)[1];

    // The new token is beta's: it lists beta's runs.
    const res = await fetch(`${URL_}/v1/runs?limit=1`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    // Shown once: the page, opened again, does not have it.
    await page.reload();
    await beta.waitFor();
    assert.equal(await page.getByText(token).count(), 0);
    assert.ok(!(await page.content()).includes(token));

    const revoke = page.locator(`button[data-revoke="${id}"]`);
    await revoke.click();
    await revoke.click();
    await page.getByText(`Revoked token ${id}.`).waitFor();
    await page.locator(`tr[data-token-id="${id}"] .revoked`).getByText(/\d{4}-\d\d-\d\d/).waitFor();
    const after = await fetch(`${URL_}/v1/runs?limit=1`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(after.status, 401);
    // (Taken now, not while the new token was on screen.)
    await screenshot(page, 'admin');
  });
});

test('open mode (no tokens configured) shows the dashboard without asking for a token', { skip: !OPEN_URL }, async () => {
  await withPage(
    'open-mode',
    async (page, _seen, base) => {
      const run = await fetch(`${base}/v1/runs`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ module: 'hello', input: 'open' }),
      }).then((r) => r.json());
      await page.goto(`${base}/ui/`);
      await page.getByText('open mode (no tokens configured)').waitFor();
      await badgeOf(page, run.id).waitFor({ timeout: 10_000 });
      assert.equal(await page.getByRole('button', { name: 'Sign out' }).isVisible(), false);
    },
    { base: OPEN_URL },
  );
});

test('the first page load is small, and served with the security headers', async () => {
  await withPage('weight', async (page) => {
    const response = await page.goto(`${URL_}/ui/`);
    await page.getByRole('heading', { name: 'Sign in to Caisson' }).waitFor();
    const headers = response.headers();
    assert.match(headers['content-security-policy'], /script-src 'self'/);
    assert.match(headers['content-security-policy'], /require-trusted-types-for 'script'/);
    assert.equal(headers['x-frame-options'], 'DENY');
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(headers['referrer-policy'], 'no-referrer');
    // Every byte the browser fetched for the first page, as sent (gzip).
    const weight = await page.evaluate(() => {
      const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
      return {
        transferred: entries.reduce((sum, e) => sum + e.transferSize, 0),
        decoded: entries.reduce((sum, e) => sum + e.decodedBodySize, 0),
        requests: entries.length,
      };
    });
    results.first_load = weight;
    assert.ok(weight.transferred > 0 && weight.transferred <= 250 * 1024, `first load ${weight.transferred} B`);
  });
});
