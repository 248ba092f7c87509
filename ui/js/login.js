// Sign-in: paste a token. It is checked against the API, then kept in
// sessionStorage for this tab only.

import { api, session } from './api.js';
import { errorBox, h, fill } from './dom.js';

export function renderLogin(main, done) {
  document.title = 'Sign in · Caisson';
  const reason = sessionStorage.getItem('caisson.signedOutReason');
  sessionStorage.removeItem('caisson.signedOutReason');
  const input = h('input', {
    type: 'password',
    id: 'token',
    name: 'token',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    placeholder: 'paste an API token',
  });
  const message = h('div', { class: 'message' }, reason ? errorBox(reason) : null);
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'login', method: 'post' },
    h('h1', {}, 'Sign in to Caisson'),
    h('p', { class: 'muted' }, 'Paste a bearer token. It is kept in this browser tab only, until you sign out or close it.'),
    h('label', { for: 'token' }, 'API token'),
    input,
    button,
    message,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    session.token = token;
    try {
      await api('/v1/runs?limit=1', { handle401: false });
      input.value = '';
      done();
    } catch (e) {
      session.token = null;
      fill(message, errorBox(e.status === 401 ? 'That token was not accepted.' : `Could not check the token: ${e.message}`));
    } finally {
      button.disabled = false;
    }
  });
  fill(main, form);
  input.focus();
}
