// Modules: every version with its digest and size, which schedules and
// workflows use it, upload by drag and drop or file input with progress,
// and delete (the API refuses, with its reason, while a module is in use).

import { api, session } from './api.js';
import { errorBox, fill, h } from './dom.js';
import { bytes, time } from './format.js';

const enc = encodeURIComponent;

/** `name -> ["schedule s", "workflow w", ...]` from the tenant's schedules
 * and workflows. */
async function usersByModule() {
  const [schedules, workflows] = await Promise.all([api('/v1/schedules'), api('/v1/workflows')]);
  const users = {};
  const add = (module, who) => {
    if (!module) return;
    (users[module] ??= new Set()).add(who);
  };
  for (const s of schedules) add(s.template?.module, `schedule ${s.name}`);
  for (const w of workflows) for (const step of w.definition?.steps ?? []) add(step.run?.module, `workflow ${w.name}`);
  return Object.fromEntries(Object.entries(users).map(([m, set]) => [m, [...set].sort()]));
}

/** A module name from a file name: `Word_Count.wasm` -> `word_count`. */
function nameFrom(file) {
  return file
    .replace(/\.wasm$/i, '')
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[.]+/, '')
    .slice(0, 64);
}

/**
 * Uploads `file` as module `name` (and `version`, if given) with
 * XMLHttpRequest, the one browser API that reports upload progress.
 */
function upload(file, name, version, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const query = new URLSearchParams({ name });
    if (version) query.set('version', version);
    xhr.open('POST', `/v1/modules?${query}`);
    xhr.setRequestHeader('Content-Type', 'application/wasm');
    xhr.setRequestHeader('X-Caisson-Client', 'caisson-ui');
    if (session.token) xhr.setRequestHeader('Authorization', `Bearer ${session.token}`);
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // Not JSON: reported by status below.
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        if (xhr.status === 401) session.onUnauthorized();
        reject(new Error(body?.error?.message ?? `${xhr.status} ${xhr.statusText}`));
      }
    });
    xhr.addEventListener('error', () => reject(new Error('the connection failed')));
    xhr.send(file);
  });
}

export function renderModules(main) {
  document.title = 'Modules · Caisson';
  const body = h('tbody', { id: 'modules-body' });
  const message = h('div', { class: 'message', id: 'modules-message' });
  const fileInput = h('input', { type: 'file', id: 'module-file', accept: '.wasm,application/wasm' });
  const nameInput = h('input', { id: 'module-name', placeholder: 'from the file name', pattern: '[a-z0-9_\\-][a-z0-9._\\-]{0,63}' });
  const versionInput = h('input', { id: 'module-version', placeholder: 'from the digest' });
  const progress = h('progress', { id: 'upload-progress', max: '100', value: '0', hidden: true });
  const uploadStatus = h('span', { id: 'upload-status', class: 'muted' });
  const drop = h(
    'div',
    { class: 'drop', id: 'drop-zone' },
    h('p', {}, 'Drop a .wasm component here, or choose one: ', fileInput),
    h('p', {}, h('label', {}, 'Name ', nameInput), ' ', h('label', {}, 'Version ', versionInput)),
    h('p', {}, progress, ' ', uploadStatus),
  );
  fill(
    main,
    h('h1', {}, 'Modules'),
    drop,
    message,
    h(
      'table',
      {},
      h(
        'thead',
        {},
        h('tr', {}, ['Module', 'Version', 'Digest', 'Size', 'Uploaded', 'Used by', ''].map((t) => h('th', { scope: 'col' }, t))),
      ),
      body,
    ),
  );

  let stopped = false;

  async function send(file) {
    const name = nameInput.value.trim() || nameFrom(file.name);
    progress.hidden = false;
    progress.value = 0;
    fill(uploadStatus, `Uploading ${file.name} (${bytes(file.size)}) as ${name}…`);
    try {
      const record = await upload(file, name, versionInput.value.trim(), (done) => {
        progress.value = Math.round(done * 100);
      });
      progress.value = 100;
      fill(uploadStatus, `Uploaded ${record.name} ${record.version} (${bytes(record.size)}, validated and compiled).`);
      fileInput.value = '';
      load();
    } catch (e) {
      fill(uploadStatus, errorBox(`Upload refused: ${e.message}`));
    }
  }

  fileInput.addEventListener('change', () => {
    if (fileInput.files?.length) send(fileInput.files[0]);
  });
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const file = event.dataTransfer?.files?.[0];
    if (file) send(file);
  });

  function deleteButton(module) {
    // Two clicks, no dialog: the first asks, the second deletes.
    const button = h('button', { type: 'button', class: 'danger', 'data-delete': `${module.name}@${module.version}` }, 'Delete');
    let armed = false;
    button.addEventListener('click', async () => {
      if (!armed) {
        armed = true;
        button.textContent = 'Really delete?';
        return;
      }
      button.disabled = true;
      try {
        await api(`/v1/modules/${enc(module.name)}?version=${enc(module.version)}`, { method: 'DELETE', raw: true });
        fill(message, h('p', { class: 'notice' }, `Deleted ${module.name} ${module.version}.`));
        load();
      } catch (e) {
        fill(message, errorBox(`Not deleted: ${e.message}`));
        button.disabled = false;
        armed = false;
        button.textContent = 'Delete';
      }
    });
    return button;
  }

  async function load() {
    try {
      const [modules, users] = await Promise.all([api('/v1/modules'), usersByModule()]);
      if (stopped) return;
      modules.sort((a, b) => a.name.localeCompare(b.name) || b.created_at - a.created_at);
      fill(
        body,
        modules.map((m) =>
          h(
            'tr',
            { 'data-module': m.name, 'data-version': m.version },
            h('td', {}, m.name),
            h('td', { class: 'mono' }, m.version),
            h('td', { class: 'mono', title: m.digest }, m.digest.slice(0, 16) + '…'),
            h('td', { class: 'num' }, bytes(m.size)),
            h('td', {}, time(m.created_at)),
            h('td', {}, (users[m.name] ?? []).join(', ')),
            h('td', {}, deleteButton(m)),
          ),
        ),
      );
      if (!modules.length) fill(body, h('tr', {}, h('td', { colspan: '7', class: 'muted' }, 'No modules yet.')));
    } catch (e) {
      if (!stopped) fill(message, errorBox(`Could not load modules: ${e.message}`));
    }
  }

  load();
  return () => {
    stopped = true;
  };
}
