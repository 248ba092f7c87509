// One run: its state, attempts, params, grants and limits, its output, and
// its log followed live over the API's event stream; cancel while it runs.

import { ApiError, api, followLog } from './api.js';
import { badge, errorBox, facts, fill, h, link } from './dom.js';
import { FINAL_STATES, bytes, duration, runDuration, time } from './format.js';

/** How often a run that has not ended is read again. */
const REFRESH_MS = 1000;
/** The most output shown on the page; the rest is downloaded. */
const PREVIEW_CHARS = 64 * 1024;
/** The most log lines kept on the page: a run may log millions. */
const MAX_LINES = 20000;
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

function rank(level) {
  const i = LEVELS.indexOf(level);
  return i < 0 ? LEVELS.indexOf('info') : i;
}

function table(headings, rows) {
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows),
  );
}

function paramsTable(params) {
  const entries = Object.entries(params ?? {});
  if (!entries.length) return h('p', { class: 'muted' }, 'None.');
  return table(
    ['Name', 'Value'],
    entries.map(([k, v]) => h('tr', {}, h('td', { class: 'mono' }, k), h('td', { class: 'mono pre' }, v))),
  );
}

function grantsList(grants) {
  const objects = grants?.objects ?? [];
  const sql = grants?.sql ?? [];
  if (!objects.length && !sql.length) return h('p', { class: 'muted' }, 'None.');
  return facts([
    ['Object stores', objects.length ? objects.join(', ') : null],
    ['SQL sources', sql.length ? sql.join(', ') : null],
  ]);
}

function attemptsTable(attempts) {
  if (!attempts?.length) return h('p', { class: 'muted' }, 'Not started yet.');
  return table(
    ['#', 'Worker', 'Started', 'Finished', 'State', 'Error'],
    attempts.map((a) =>
      h(
        'tr',
        {},
        h('td', { class: 'num' }, String(a.attempt)),
        h('td', { class: 'mono' }, a.worker_id),
        h('td', {}, time(a.started_at)),
        h('td', {}, time(a.finished_at)),
        h('td', {}, badge(a.state)),
        h('td', { class: 'pre' }, a.error ?? ''),
      ),
    ),
  );
}

async function download(run, button) {
  button.disabled = true;
  try {
    const res = await api(`/v1/runs/${encodeURIComponent(run.id)}/output`, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: `${run.id}.out` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    button.after(errorBox(`Could not download the output: ${e.message}`));
  } finally {
    button.disabled = false;
  }
}

function outputSection(run) {
  const parts = [];
  if (run.output !== null && run.output !== undefined) {
    const shown = run.output.length > PREVIEW_CHARS ? run.output.slice(0, PREVIEW_CHARS) : run.output;
    parts.push(h('pre', { id: 'output', class: 'output' }, shown));
    if (shown.length < run.output.length) parts.push(h('p', { class: 'muted' }, `First ${PREVIEW_CHARS} characters shown.`));
  } else if (run.output_base64) {
    parts.push(h('p', { class: 'muted' }, `Binary output, ${bytes(Math.floor((run.output_base64.length * 3) / 4))}.`));
  } else if (!run.output_url) {
    parts.push(h('p', { class: 'muted' }, FINAL_STATES.has(run.state) ? 'No output.' : 'Not finished yet.'));
  } else {
    parts.push(h('p', { class: 'muted' }, 'The output is too large to show here.'));
  }
  if (run.output !== null || run.output_base64 || run.output_url) {
    const button = h('button', { type: 'button', id: 'download-output' }, 'Download output');
    button.addEventListener('click', () => download(run, button));
    parts.push(button);
  }
  return parts;
}

function summary(run) {
  const attempts = `${run.attempts} of at most ${run.max_retries + 1}`;
  return facts([
    ['Module', `${run.module} ${run.version}`],
    ['Digest', h('span', { class: 'mono' }, run.digest)],
    ['Created', time(run.created_at)],
    ['Started', run.started_at ? time(run.started_at) : null],
    ['Finished', run.finished_at ? time(run.finished_at) : null],
    ['Duration', runDuration(run) || null],
    ['Attempts', attempts],
    ['Timeout', duration(run.timeout_ms)],
    ['Memory', bytes(run.memory)],
    ['Fuel', run.fuel === null ? null : String(run.fuel)],
    ['Priority', String(run.priority)],
    ['Schedule', run.schedule_id],
    ['Logical date', run.logical_date ? time(run.logical_date) : null],
    ['Workflow run', run.workflow_run_id],
    ['Step', run.step_name],
    ['Idempotency key', run.idempotency_key],
  ]);
}

function logView(id, { onActivity }) {
  const lines = h('div', { id: 'log', class: 'log', role: 'log', 'aria-live': 'off', tabindex: '0' });
  const follow = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const level = h(
    'select',
    { id: 'log-level', 'aria-label': 'Lowest level shown' },
    LEVELS.map((l) => h('option', { value: l, selected: l === 'trace' }, l)),
  );
  const count = h('span', { id: 'log-count', class: 'muted' }, '0 lines');
  const status = h('span', { id: 'log-status', class: 'muted' }, 'connecting…');
  let total = 0;

  const applyLevel = () => {
    const min = rank(level.value);
    for (const line of lines.children) line.hidden = rank(line.dataset.level) < min;
  };
  level.addEventListener('change', applyLevel);
  const scroll = () => {
    if (follow.checked) lines.scrollTop = lines.scrollHeight;
  };
  follow.addEventListener('change', scroll);

  const onLine = (line) => {
    total += 1;
    const el = h(
      'div',
      {
        class: `line level-${LEVELS.includes(line.level) ? line.level : 'info'}`,
        dataset: { level: line.level, source: line.source, seq: String(line.seq) },
      },
      h('span', { class: 'time' }, time(line.time).slice(11)),
      h('span', { class: 'level' }, line.level),
      h('span', { class: 'source' }, line.source),
      h('span', { class: 'message' }, line.message),
    );
    el.hidden = rank(line.level) < rank(level.value);
    lines.append(el);
    while (lines.childElementCount > MAX_LINES) lines.firstElementChild.remove();
    count.textContent = `${total} line${total === 1 ? '' : 's'}`;
    scroll();
    onActivity();
  };

  const controller = new AbortController();
  const view = h(
    'section',
    { class: 'log-section' },
    h(
      'div',
      { class: 'log-controls' },
      h('h2', {}, 'Log'),
      h('label', {}, follow, ' Follow'),
      h('label', {}, 'Level ', level),
      count,
      status,
    ),
    lines,
  );
  const started = (onEnd) =>
    followLog(id, {
      signal: controller.signal,
      onLine,
      onEnd: (state) => {
        status.textContent = `the run ended ${state}; the log is complete`;
        onEnd(state);
      },
      onError: (e) => {
        fill(status, errorBox(`Log: ${e.message}`));
      },
    });
  return { view, start: started, stop: () => controller.abort(), live: () => (status.textContent = 'live') };
}

export function renderRun(main, id) {
  document.title = `Run ${id} · Caisson`;
  const header = h('div', { class: 'run-header' });
  const body = h('div', { class: 'run-body' });
  const message = h('div', { class: 'message' });
  let stopped = false;
  let timer = null;
  let logStarted = false;
  const controller = new AbortController();
  let shownState = null;
  // A log line means the run has started: show it running now rather
  // than at the next refresh.
  const log = logView(id, {
    onActivity: () => {
      if (shownState === 'queued') {
        shownState = 'reloading';
        load();
      }
    },
  });
  // The log sits outside what each refresh redraws, so it keeps its lines
  // and its scroll position.
  fill(main, h('p', {}, link('/runs', '← Runs')), header, message, body, log.view);

  function show(run) {
    shownState = run.state;
    const final = FINAL_STATES.has(run.state);
    const cancel = h('button', { type: 'button', id: 'cancel-run', class: 'danger' }, 'Cancel run');
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      try {
        show(await api(`/v1/runs/${encodeURIComponent(run.id)}/cancel`, { method: 'POST' }));
        fill(message, h('p', { class: 'notice' }, 'Cancellation requested.'));
      } catch (e) {
        fill(message, errorBox(`Could not cancel: ${e.message}`));
        cancel.disabled = false;
      }
    });
    // A new run with everything this one had; the server copies the input,
    // which the API never shows.
    const rerun = h('button', { type: 'button', id: 'rerun' }, 'Re-run');
    rerun.addEventListener('click', async () => {
      rerun.disabled = true;
      try {
        const created = await api(`/v1/runs/${encodeURIComponent(run.id)}/rerun`, { method: 'POST' });
        location.hash = `#/runs/${encodeURIComponent(created.id)}`;
      } catch (e) {
        fill(message, errorBox(`Could not re-run: ${e.message}`));
        rerun.disabled = false;
      }
    });
    fill(
      header,
      h('h1', {}, 'Run ', h('span', { class: 'mono', id: 'run-id' }, run.id), ' ', h('span', { id: 'run-state' }, badge(run.state))),
      final ? null : cancel,
      rerun,
    );
    const error = run.error ? [h('h2', {}, 'Error'), h('pre', { id: 'run-error', class: 'output error-text' }, run.error)] : [];
    fill(
      body,
      error,
      h(
        'div',
        { class: 'columns' },
        h('section', {}, h('h2', {}, 'Summary'), summary(run)),
        h('section', {}, h('h2', {}, 'Params'), paramsTable(run.params), h('h2', {}, 'Grants'), grantsList(run.grants)),
      ),
      h('section', {}, h('h2', {}, 'Attempts'), attemptsTable(run.attempt_history)),
      h('section', {}, h('h2', {}, 'Output'), outputSection(run)),
    );
    return final;
  }

  // One read at a time: a read asked for while one is under way (a log
  // line, the log's end) happens right after it.
  let loading = false;
  let again = false;
  async function load() {
    if (stopped) return;
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    clearTimeout(timer);
    let final = false;
    try {
      const run = await api(`/v1/runs/${encodeURIComponent(id)}`, { signal: controller.signal });
      if (stopped) return;
      final = show(run);
      if (!logStarted) {
        logStarted = true;
        log.live();
        // When the log ends the run has ended: read it once more for its
        // final state and output.
        log.start(() => load());
      }
    } catch (e) {
      if (stopped) return;
      if (e instanceof ApiError && e.status === 404) {
        document.title = 'Not found · Caisson';
        fill(main, h('p', {}, link('/runs', '← Runs')), h('h1', {}, 'Not found'), h('p', { id: 'not-found' }, `There is no run ${id} here.`));
        stopped = true;
        log.stop();
        return;
      }
      fill(message, errorBox(`Could not load the run: ${e.message}`));
    } finally {
      loading = false;
    }
    if (stopped) return;
    if (again) {
      again = false;
      load();
    } else if (!final) {
      timer = setTimeout(load, REFRESH_MS);
    }
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
    log.stop();
  };
}
