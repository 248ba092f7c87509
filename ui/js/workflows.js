// Workflows: the list, and one workflow's definition drawn as a DAG (laid
// out by dagre, vendored from npm) with a run's steps coloured by state,
// live; a step opens its run. Start a run from here.

import { ApiError, api } from './api.js';
import { badge, errorBox, fill, h, link, svg } from './dom.js';
import { time } from './format.js';

const REFRESH_MS = 1500;
const NODE_HEIGHT = 34;

/** dagre, loaded on the first workflow page only: the runs pages do not
 * pay for it. */
let dagre = null;
async function loadDagre() {
  dagre ??= await import('../vendor/dagre/dagre.esm.js');
  return dagre;
}

const enc = encodeURIComponent;

export function renderWorkflows(main) {
  document.title = 'Workflows · Caisson';
  const body = h('tbody');
  const status = h('p', { class: 'muted' });
  fill(
    main,
    h('h1', {}, 'Workflows'),
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, ['Workflow', 'Steps', 'Modules', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
      body,
    ),
    status,
  );
  api('/v1/workflows')
    .then((workflows) => {
      fill(
        body,
        workflows.map((w) => {
          const steps = w.definition?.steps ?? [];
          const modules = [...new Set(steps.map((s) => s.run?.module).filter(Boolean))].sort();
          return h(
            'tr',
            { 'data-workflow': w.name },
            h('td', {}, link(`/workflows/${enc(w.name)}`, w.name)),
            h('td', { class: 'num' }, String(steps.length)),
            h('td', {}, modules.join(', ')),
            h('td', {}, time(w.created_at)),
          );
        }),
      );
      fill(status, workflows.length ? '' : 'No workflows yet: create one with POST /v1/workflows or `caisson workflow create`.');
    })
    .catch((e) => fill(status, errorBox(`Could not load workflows: ${e.message}`)));
}

/** The DAG of `steps` (`[{name, depends_on}]`) as an SVG, each step
 * coloured by `states[name]` and linked to `runs[name]` when it has one. */
function graph({ graphlib, layout }, steps, states, runs) {
  const g = new graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 14, ranksep: 46, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const step of steps) {
    g.setNode(step.name, { width: Math.max(70, step.name.length * 7.6 + 26), height: NODE_HEIGHT });
  }
  for (const step of steps) {
    for (const dep of step.depends_on ?? []) if (g.hasNode(dep)) g.setEdge(dep, step.name);
  }
  layout(g);
  const { width, height } = g.graph();
  const edges = g.edges().map((e) => {
    const points = g.edge(e).points;
    const d = points.map((p, i) => `${i ? 'L' : 'M'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');
    return svg('path', { class: 'edge', d, 'marker-end': 'url(#arrow)' });
  });
  const nodes = steps.map((step) => {
    const n = g.node(step.name);
    const state = states[step.name] ?? 'pending';
    const box = [
      svg('title', {}, `${step.name}: ${state}`),
      svg('rect', { x: n.x - n.width / 2, y: n.y - n.height / 2, width: n.width, height: n.height, rx: 6 }),
      svg('text', { x: n.x, y: n.y + 4, 'text-anchor': 'middle' }, step.name),
    ];
    const attrs = { class: `step state-${state}`, dataset: { step: step.name, state } };
    const run = runs[step.name];
    return run ? svg('a', { ...attrs, href: `#/runs/${enc(run)}` }, box) : svg('g', attrs, box);
  });
  return svg(
    'svg',
    { class: 'dag', width: Math.ceil(width), height: Math.ceil(height), viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, role: 'img', 'aria-label': 'Workflow graph' },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' }, svg('path', { d: 'M0,0 L10,5 L0,10 z' }))),
    edges,
    nodes,
  );
}

export function renderWorkflow(main, name, query) {
  document.title = `Workflow ${name} · Caisson`;
  const header = h('div', { class: 'run-header' });
  const message = h('div', { class: 'message' });
  const picture = h('div', { class: 'dag-box', id: 'dag' });
  const summary = h('p', { class: 'muted', id: 'step-summary' });
  const steps = h('div');
  const runs = h('div');
  fill(main, h('p', {}, link('/workflows', '← Workflows')), header, message, picture, summary, steps, h('h2', {}, 'Recent runs'), runs);

  let stopped = false;
  let timer = null;

  const start = h('button', { type: 'button', id: 'start-workflow' }, 'Start a run');
  start.addEventListener('click', async () => {
    start.disabled = true;
    try {
      const run = await api(`/v1/workflows/${enc(name)}/runs`, { method: 'POST' });
      location.hash = `#/workflows/${enc(name)}?run=${enc(run.id)}`;
    } catch (e) {
      fill(message, errorBox(`Could not start a run: ${e.message}`));
      start.disabled = false;
    }
  });

  async function load() {
    if (stopped) return;
    let live = false;
    try {
      const [lib, workflow] = await Promise.all([loadDagre(), api(`/v1/workflows/${enc(name)}`)]);
      if (stopped) return;
      const selectedId = query.run ?? workflow.runs[0]?.id;
      const selected = selectedId ? await api(`/v1/workflow-runs/${enc(selectedId)}`) : null;
      if (stopped) return;
      live = selected?.state === 'running';
      // The graph of the selected run is the definition it started with.
      const record = workflow.runs.find((r) => r.id === selectedId);
      const definition = record?.definition ?? workflow.definition;
      const states = Object.fromEntries((selected?.steps ?? []).map((s) => [s.name, s.state]));
      const stepRuns = Object.fromEntries((selected?.steps ?? []).filter((s) => s.run_id).map((s) => [s.name, s.run_id]));
      fill(
        header,
        h('h1', {}, 'Workflow ', h('span', { class: 'mono' }, name)),
        start,
      );
      fill(picture, graph(lib, definition.steps ?? [], states, stepRuns));
      if (selected) {
        const counts = {};
        for (const s of selected.steps) counts[s.state] = (counts[s.state] ?? 0) + 1;
        fill(
          summary,
          'Run ',
          h('span', { class: 'mono', id: 'workflow-run-id' }, selected.id),
          ' ',
          h('span', { id: 'workflow-run-state' }, badge(selected.state)),
          ` started ${time(selected.created_at)}: `,
          Object.entries(counts)
            .map(([s, n]) => `${n} ${s}`)
            .join(', '),
          '. Click a step to open its run.',
        );
        fill(
          steps,
          h(
            'table',
            { class: 'steps' },
            h('thead', {}, h('tr', {}, ['Step', 'State', 'Run'].map((t) => h('th', { scope: 'col' }, t)))),
            h(
              'tbody',
              {},
              selected.steps.map((s) =>
                h(
                  'tr',
                  { 'data-step': s.name },
                  h('td', { class: 'mono' }, s.name),
                  h('td', {}, badge(s.state)),
                  h('td', { class: 'mono' }, s.run_id ? link(`/runs/${enc(s.run_id)}`, s.run_id) : ''),
                ),
              ),
            ),
          ),
        );
      } else {
        fill(summary, 'No runs yet.');
        fill(steps);
      }
      fill(
        runs,
        workflow.runs.length
          ? h(
              'table',
              {},
              h('thead', {}, h('tr', {}, ['Workflow run', 'State', 'Started', 'Finished'].map((t) => h('th', { scope: 'col' }, t)))),
              h(
                'tbody',
                {},
                workflow.runs.map((r) =>
                  h(
                    'tr',
                    { class: r.id === selectedId ? 'selected' : null },
                    h('td', { class: 'mono' }, link(`/workflows/${enc(name)}?run=${enc(r.id)}`, r.id)),
                    h('td', {}, badge(r.state)),
                    h('td', {}, time(r.created_at)),
                    h('td', {}, time(r.finished_at)),
                  ),
                ),
              ),
            )
          : h('p', { class: 'muted' }, 'None yet.'),
      );
      fill(message);
    } catch (e) {
      if (stopped) return;
      if (e instanceof ApiError && e.status === 404) {
        fill(main, h('p', {}, link('/workflows', '← Workflows')), h('h1', {}, 'Not found'), h('p', {}, e.message));
        return;
      }
      fill(message, errorBox(`Could not load the workflow: ${e.message}`));
      live = true;
    }
    if (live && !stopped) timer = setTimeout(load, REFRESH_MS);
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
