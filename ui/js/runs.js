// Runs: the list, newest first, filtered by state, module and time, paged
// with the API's keyset cursor, and refreshed live while it is on screen.

import { api, path } from './api.js';
import { badge, errorBox, fill, h, link } from './dom.js';
import { RUN_STATES, runDuration, time } from './format.js';

/** How often the list on screen is read again. */
const REFRESH_MS = 2000;
const PAGE = 50;

/**
 * The cursors of the pages before the one shown, so that "Newer" can go
 * back: the API's cursors only go towards older runs. Kept across
 * re-renders of the same filters.
 */
let back = { filters: '', cursors: [] };

function filterKey(query) {
  return JSON.stringify([query.state ?? '', query.module ?? '', query.since ?? '']);
}

function go(query) {
  const params = new URLSearchParams();
  for (const key of ['state', 'module', 'since', 'cursor']) {
    if (query[key]) params.set(key, query[key]);
  }
  const qs = params.toString();
  location.hash = qs ? `#/runs?${qs}` : '#/runs';
}

/** `YYYY-MM-DDTHH:MM` in local time, for a datetime-local input. */
function localInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function filters(query) {
  const state = h(
    'select',
    { id: 'filter-state', name: 'state', 'aria-label': 'State' },
    h('option', { value: '' }, 'any state'),
    RUN_STATES.map((s) => h('option', { value: s, selected: query.state === s }, s)),
  );
  const module = h('input', {
    id: 'filter-module',
    name: 'module',
    list: 'module-names',
    placeholder: 'any module',
    'aria-label': 'Module',
    value: query.module ?? '',
  });
  const names = h('datalist', { id: 'module-names' });
  const since = h('input', {
    id: 'filter-since',
    name: 'since',
    type: 'datetime-local',
    'aria-label': 'Created since',
    value: localInput(query.since),
  });
  const apply = () => {
    const when = since.value ? new Date(since.value) : null;
    go({
      state: state.value,
      module: module.value.trim(),
      since: when && !Number.isNaN(when.getTime()) ? when.toISOString() : '',
    });
  };
  state.addEventListener('change', apply);
  since.addEventListener('change', apply);
  const form = h(
    'form',
    { class: 'filters', role: 'search' },
    h('label', {}, 'State ', state),
    h('label', {}, 'Module ', module, names),
    h('label', {}, 'Created since ', since),
    h('button', { type: 'submit' }, 'Filter'),
    h('button', { type: 'button', onclick: () => go({}) }, 'Clear'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    apply();
  });
  // The module names, for the input's suggestions; the list works without.
  api('/v1/modules')
    .then((modules) => {
      const unique = [...new Set(modules.map((m) => m.name))].sort();
      fill(names, unique.map((n) => h('option', { value: n })));
    })
    .catch(() => {});
  return form;
}

function row(run) {
  return h(
    'tr',
    { 'data-run-id': run.id },
    h('td', { class: 'mono' }, link(`/runs/${encodeURIComponent(run.id)}`, run.id)),
    h('td', {}, run.module, h('span', { class: 'muted' }, ` ${run.version}`)),
    h('td', { class: 'state' }, badge(run.state)),
    h('td', { class: 'created' }, time(run.created_at)),
    h('td', { class: 'took' }, runDuration(run)),
    h('td', { class: 'attempts num' }, String(run.attempts)),
    h('td', { class: 'origin muted' }, run.step_name ? `step ${run.step_name}` : run.schedule_id ? 'schedule' : ''),
  );
}

/** Updates the rows in place when the same runs are shown, so that a
 * refresh does not flicker or lose the pointer's place. */
function update(tbody, runs) {
  const rows = [...tbody.children];
  const same = rows.length === runs.length && rows.every((tr, i) => tr.dataset.runId === runs[i].id);
  if (!same) {
    fill(tbody, runs.map(row));
    return;
  }
  runs.forEach((run, i) => {
    const tr = rows[i];
    const state = tr.querySelector('.state');
    if (state.firstChild?.dataset.state !== run.state) fill(state, badge(run.state));
    tr.querySelector('.took').textContent = runDuration(run);
    tr.querySelector('.attempts').textContent = String(run.attempts);
  });
}

export function renderRuns(main, query) {
  document.title = 'Runs · Caisson';
  const key = filterKey(query);
  if (back.filters !== key) back = { filters: key, cursors: [] };
  if (!query.cursor) back.cursors = [];

  const tbody = h('tbody', { id: 'runs-body' });
  const status = h('p', { class: 'status muted', 'aria-live': 'polite' });
  const newest = h('button', { type: 'button', id: 'page-newest' }, 'Newest');
  const newer = h('button', { type: 'button', id: 'page-newer' }, '← Newer');
  const older = h('button', { type: 'button', id: 'page-older' }, 'Older →');
  const pageInfo = h('span', { id: 'page-number', class: 'muted' });
  let next = null;

  newest.addEventListener('click', () => go({ ...query, cursor: '' }));
  newer.addEventListener('click', () => {
    const previous = back.cursors.pop();
    go({ ...query, cursor: previous ?? '' });
  });
  older.addEventListener('click', () => {
    if (!next) return;
    back.cursors.push(query.cursor ?? '');
    go({ ...query, cursor: next });
  });

  fill(
    main,
    h('h1', {}, 'Runs'),
    filters(query),
    h(
      'table',
      { class: 'runs' },
      h(
        'thead',
        {},
        h('tr', {}, ['Run', 'Module', 'State', 'Created', 'Duration', 'Attempts', 'From'].map((t) => h('th', { scope: 'col' }, t))),
      ),
      tbody,
    ),
    status,
    h('nav', { class: 'pager', 'aria-label': 'Pages' }, newest, newer, pageInfo, older),
  );

  let stopped = false;
  let timer = null;
  const controller = new AbortController();

  async function load() {
    if (stopped) return;
    try {
      const page = await api(
        path('/v1/runs', {
          state: query.state,
          module: query.module,
          since: query.since,
          cursor: query.cursor,
          limit: PAGE,
        }),
        { signal: controller.signal },
      );
      if (stopped) return;
      update(tbody, page.runs);
      next = page.next ?? null;
      const first = !query.cursor;
      newest.disabled = first;
      newer.disabled = first;
      older.disabled = !next;
      pageInfo.textContent = `page ${back.cursors.length + 1}`;
      const n = page.runs.length;
      fill(status, n ? `${n} run${n === 1 ? '' : 's'} shown, updated ${time(new Date())}` : 'No runs match.');
    } catch (e) {
      if (stopped) return;
      fill(status, errorBox(`Could not load runs: ${e.message}`));
    }
    schedule();
  }

  function schedule() {
    if (stopped) return;
    timer = setTimeout(() => {
      // A hidden tab waits: it reloads when shown again.
      if (document.hidden) schedule();
      else load();
    }, REFRESH_MS);
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}
