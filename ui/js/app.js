// The dashboard's shell: sign-in, the navigation and a router over the
// URL's fragment (`#/runs`, `#/runs/ID`, `#/workflows/NAME?run=ID`), so
// that the server serves one page and every view has an address to share
// or reload.

import { probeOpen, session } from './api.js';
import { fill } from './dom.js';
import { renderLogin } from './login.js';
import { renderRuns } from './runs.js';
import { renderRun } from './run.js';
import { renderWorkflow, renderWorkflows } from './workflows.js';
import { renderSchedule, renderSchedules } from './schedules.js';
import { renderModules } from './modules.js';
import { renderAdmin } from './admin.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const mode = document.getElementById('mode');
const signout = document.getElementById('signout');

/** Whether the server answers without a token (open loopback mode). */
let open = false;
/** Ends the current view's timers and streams. */
let cleanup = () => {};

const routes = [
  { pattern: /^\/runs$/, section: 'runs', view: (_, query) => renderRuns(main, query) },
  { pattern: /^\/runs\/([^/]+)$/, section: 'runs', view: ([id]) => renderRun(main, decodeURIComponent(id)) },
  { pattern: /^\/workflows$/, section: 'workflows', view: () => renderWorkflows(main) },
  {
    pattern: /^\/workflows\/([^/]+)$/,
    section: 'workflows',
    view: ([name], query) => renderWorkflow(main, decodeURIComponent(name), query),
  },
  { pattern: /^\/schedules$/, section: 'schedules', view: () => renderSchedules(main) },
  { pattern: /^\/schedules\/([^/]+)$/, section: 'schedules', view: ([name]) => renderSchedule(main, decodeURIComponent(name)) },
  { pattern: /^\/modules$/, section: 'modules', view: () => renderModules(main) },
  { pattern: /^\/admin$/, section: 'admin', view: () => renderAdmin(main) },
];

function signedIn() {
  return open || Boolean(session.token);
}

function route() {
  cleanup();
  cleanup = () => {};
  const hash = location.hash.replace(/^#/, '') || '/runs';
  const [where, qs = ''] = hash.split('?');
  const query = Object.fromEntries(new URLSearchParams(qs));
  if (!signedIn()) {
    nav.hidden = true;
    signout.hidden = true;
    mode.textContent = '';
    cleanup = renderLogin(main, () => route()) ?? (() => {});
    return;
  }
  nav.hidden = false;
  signout.hidden = open;
  mode.textContent = open ? 'open mode (no tokens configured)' : '';
  for (const { pattern, section, view } of routes) {
    const match = pattern.exec(where);
    if (!match) continue;
    for (const a of nav.querySelectorAll('a')) {
      a.classList.toggle('current', a.dataset.section === section);
    }
    cleanup = view(match.slice(1), query) ?? (() => {});
    return;
  }
  document.title = 'Not found · Caisson';
  fill(main, 'There is no such page here.');
}

session.onUnauthorized = () => {
  // A revoked or wrong token: forget it and ask again.
  if (session.token) {
    session.token = null;
    sessionStorage.setItem('caisson.signedOutReason', 'The server no longer accepts that token.');
  }
  route();
};

signout.addEventListener('click', () => {
  session.token = null;
  route();
});

window.addEventListener('hashchange', route);

async function start() {
  if (!session.token) {
    try {
      open = await probeOpen();
    } catch {
      open = false;
    }
  }
  route();
}

start();
