// Schedules: the list, and one schedule with its next five fire times,
// pause and resume, a backfill form and its recent runs.

import { ApiError, api, path } from './api.js';
import { badge, errorBox, facts, fill, h, link } from './dom.js';
import { time } from './format.js';

const enc = encodeURIComponent;

function stateBadge(schedule) {
  return h(
    'span',
    { class: `badge ${schedule.paused ? 'state-cancelled' : 'state-succeeded'}`, 'data-state': schedule.paused ? 'paused' : 'active' },
    schedule.paused ? 'paused' : 'active',
  );
}

export function renderSchedules(main) {
  document.title = 'Schedules · Caisson';
  const body = h('tbody');
  const status = h('p', { class: 'muted' });
  fill(
    main,
    h('h1', {}, 'Schedules'),
    h(
      'table',
      {},
      h(
        'thead',
        {},
        h('tr', {}, ['Schedule', 'Cron', 'Time zone', 'Module', 'State', 'Next fire', 'Last fired'].map((t) => h('th', { scope: 'col' }, t))),
      ),
      body,
    ),
    status,
  );
  api('/v1/schedules')
    .then((schedules) => {
      fill(
        body,
        schedules.map((s) =>
          h(
            'tr',
            { 'data-schedule': s.name },
            h('td', {}, link(`/schedules/${enc(s.name)}`, s.name)),
            h('td', { class: 'mono' }, s.cron),
            h('td', {}, s.timezone),
            h('td', {}, s.template?.module ?? ''),
            h('td', {}, stateBadge(s)),
            h('td', {}, time(s.next_fire_at)),
            h('td', {}, time(s.last_fired_at)),
          ),
        ),
      );
      fill(status, schedules.length ? '' : 'No schedules yet: create one with POST /v1/schedules or `caisson schedule create`.');
    })
    .catch((e) => fill(status, errorBox(`Could not load schedules: ${e.message}`)));
}

/** `2026-12-03 02:30` in time zone `tz` (the schedule's), or '' if the
 * browser does not know it. */
function zoned(iso, tz) {
  try {
    return new Intl.DateTimeFormat('sv-SE', {
      timeZone: tz,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
    }).format(new Date(iso));
  } catch {
    return '';
  }
}

/** `YYYY-MM-DDTHH:MM` of a datetime-local input, as an RFC 3339 instant. */
function instant(value) {
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

export function renderSchedule(main, name) {
  document.title = `Schedule ${name} · Caisson`;
  const header = h('div', { class: 'run-header' });
  const message = h('div', { class: 'message' });
  const details = h('div', { class: 'columns' });
  const recent = h('div');
  const from = h('input', { type: 'datetime-local', id: 'backfill-from', required: true });
  const to = h('input', { type: 'datetime-local', id: 'backfill-to', required: true });
  const backfillButton = h('button', { type: 'submit' }, 'Backfill');
  const backfillResult = h('div', { id: 'backfill-result' });
  const backfill = h(
    'form',
    { class: 'filters', id: 'backfill' },
    h('label', {}, 'From (exclusive) ', from),
    h('label', {}, 'To ', to),
    backfillButton,
  );
  fill(
    main,
    h('p', {}, link('/schedules', '← Schedules')),
    header,
    message,
    details,
    h('h2', {}, 'Backfill'),
    h('p', { class: 'muted' }, 'Start a run for every fire time in the range, each with its logical date. Times that already have a run are not repeated.'),
    backfill,
    backfillResult,
    h('h2', {}, 'Recent runs'),
    recent,
  );

  backfill.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { from: instant(from.value), to: instant(to.value) };
    if (!body.from || !body.to) return;
    backfillButton.disabled = true;
    try {
      const result = await api(`/v1/schedules/${enc(name)}/backfill`, { method: 'POST', json: body });
      const n = result.runs.length;
      fill(backfillResult, h('p', { class: 'notice' }, `Started ${n} run${n === 1 ? '' : 's'}.`));
      load();
    } catch (e) {
      fill(backfillResult, errorBox(`Backfill refused: ${e.message}`));
    } finally {
      backfillButton.disabled = false;
    }
  });

  let stopped = false;

  async function toggle(schedule, button) {
    button.disabled = true;
    try {
      await api(`/v1/schedules/${enc(name)}/${schedule.paused ? 'resume' : 'pause'}`, { method: 'POST' });
      await load();
    } catch (e) {
      fill(message, errorBox(`Could not ${schedule.paused ? 'resume' : 'pause'}: ${e.message}`));
      button.disabled = false;
    }
  }

  async function load() {
    try {
      const [schedule, next] = await Promise.all([
        api(`/v1/schedules/${enc(name)}`),
        api(`/v1/schedules/${enc(name)}/next?count=5`),
      ]);
      if (stopped) return;
      const button = h('button', { type: 'button', id: 'toggle-schedule' }, schedule.paused ? 'Resume' : 'Pause');
      button.addEventListener('click', () => toggle(schedule, button));
      fill(header, h('h1', {}, 'Schedule ', h('span', { class: 'mono' }, name), ' ', h('span', { id: 'schedule-state' }, stateBadge(schedule))), button);
      fill(
        details,
        h(
          'section',
          {},
          h('h2', {}, 'Definition'),
          facts([
            ['Cron', h('span', { class: 'mono' }, schedule.cron)],
            ['Time zone', schedule.timezone],
            ['Catch-up', schedule.catch_up === 'all' ? 'every missed time' : 'the latest missed time only'],
            ['Last fired', schedule.last_fired_at ? time(schedule.last_fired_at) : 'never'],
            ['Created', time(schedule.created_at)],
          ]),
          h('h2', {}, 'Run'),
          h('pre', { class: 'output' }, JSON.stringify(schedule.template, null, 2)),
        ),
        h(
          'section',
          {},
          h('h2', {}, 'Next fire times'),
          next.times.length
            ? h(
                'ol',
                { id: 'next-times' },
                next.times.map((t) =>
                  h('li', { title: t }, zoned(t, schedule.timezone), ' ', h('span', { class: 'muted' }, `${schedule.timezone}, ${time(t)} here`)),
                ),
              )
            : h('p', { class: 'muted', id: 'no-next-times' }, 'None while the schedule is paused.'),
        ),
      );
      // The API lists runs by module, not by schedule: pick this
      // schedule's from its module's latest runs.
      const module = schedule.template?.module;
      const page = module ? await api(path('/v1/runs', { module, limit: 200 })) : { runs: [] };
      if (stopped) return;
      const mine = page.runs.filter((r) => r.schedule_id === schedule.id).slice(0, 20);
      fill(
        recent,
        mine.length
          ? h(
              'table',
              {},
              h('thead', {}, h('tr', {}, ['Run', 'Logical date', 'State', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
              h(
                'tbody',
                {},
                mine.map((r) =>
                  h(
                    'tr',
                    { 'data-run-id': r.id },
                    h('td', { class: 'mono' }, link(`/runs/${enc(r.id)}`, r.id)),
                    h('td', {}, time(r.logical_date)),
                    h('td', {}, badge(r.state)),
                    h('td', {}, time(r.created_at)),
                  ),
                ),
              ),
            )
          : h('p', { class: 'muted' }, `No runs among the latest of ${module ?? 'its module'}.`),
      );
      fill(message);
    } catch (e) {
      if (stopped) return;
      if (e instanceof ApiError && e.status === 404) {
        fill(main, h('p', {}, link('/schedules', '← Schedules')), h('h1', {}, 'Not found'), h('p', {}, e.message));
        return;
      }
      fill(message, errorBox(`Could not load the schedule: ${e.message}`));
    }
  }

  load();
  return () => {
    stopped = true;
  };
}
