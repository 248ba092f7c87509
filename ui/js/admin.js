// Admin: tenants with what their runs may be granted, their tokens (ids
// and dates, never the secrets), minting a token (shown once, here, and
// kept nowhere) and revoking one. The API allows all of it to the admin
// token only.

import { ApiError, api } from './api.js';
import { errorBox, fill, h } from './dom.js';
import { time } from './format.js';

const enc = encodeURIComponent;

function revokeButton(token, done) {
  // Two clicks, no dialog: the first asks, the second revokes.
  const button = h('button', { type: 'button', class: 'danger', 'data-revoke': token.id }, 'Revoke');
  let armed = false;
  button.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      button.textContent = 'Really revoke?';
      return;
    }
    button.disabled = true;
    try {
      await api(`/v1/tokens/${enc(token.id)}`, { method: 'DELETE', raw: true });
      done(null);
    } catch (e) {
      done(e);
    }
  });
  return button;
}

function tenantSection(tenant, message) {
  const tokens = h('div');
  const minted = h('div', { class: 'minted' });
  const mint = h('button', { type: 'button', 'data-mint': tenant.name }, 'Create a token');

  async function loadTokens() {
    try {
      const list = await api(`/v1/tenants/${enc(tenant.name)}/tokens`);
      fill(
        tokens,
        list.length
          ? h(
              'table',
              { class: 'tokens' },
              h('thead', {}, h('tr', {}, ['Token id', 'Source', 'Created', 'Revoked', ''].map((t) => h('th', { scope: 'col' }, t)))),
              h(
                'tbody',
                {},
                list.map((t) =>
                  h(
                    'tr',
                    { 'data-token-id': t.id },
                    h('td', { class: 'mono' }, t.id),
                    h('td', {}, t.source),
                    h('td', {}, time(t.created_at)),
                    h('td', { class: 'revoked' }, t.revoked_at ? time(t.revoked_at) : ''),
                    h(
                      'td',
                      {},
                      t.revoked_at
                        ? ''
                        : revokeButton(t, (e) => {
                            if (e) fill(message, errorBox(`Could not revoke: ${e.message}`));
                            else fill(message, h('p', { class: 'notice' }, `Revoked token ${t.id}.`));
                            loadTokens();
                          }),
                    ),
                  ),
                ),
              ),
            )
          : h('p', { class: 'muted' }, 'No tokens.'),
      );
    } catch (e) {
      fill(tokens, errorBox(`Could not list tokens: ${e.message}`));
    }
  }

  mint.addEventListener('click', async () => {
    mint.disabled = true;
    try {
      const created = await api(`/v1/tenants/${enc(tenant.name)}/tokens`, { method: 'POST' });
      // Shown once: the page keeps it in this element only, and the API
      // keeps only its hash.
      fill(
        minted,
        h(
          'p',
          { class: 'notice' },
          `New token for ${tenant.name} (id ${created.id}). Copy it now: it is not shown again. `,
          h('code', { class: 'new-token', id: `new-token-${tenant.name}` }, created.token),
        ),
      );
      loadTokens();
    } catch (e) {
      fill(minted, errorBox(`Could not create a token: ${e.message}`));
    } finally {
      mint.disabled = false;
    }
  });

  loadTokens();
  const grants = (labels) => (labels.length ? labels.join(', ') : 'none');
  return h(
    'section',
    { class: 'tenant', 'data-tenant': tenant.name },
    h('h2', {}, 'Tenant ', h('span', { class: 'mono' }, tenant.name)),
    h('p', {}, `Object stores: ${grants(tenant.objects)}. SQL sources: ${grants(tenant.sql)}.`),
    tokens,
    h('p', {}, mint),
    minted,
  );
}

export function renderAdmin(main) {
  document.title = 'Admin · Caisson';
  const message = h('div', { class: 'message', id: 'admin-message' });
  const list = h('div');
  fill(main, h('h1', {}, 'Admin'), message, list);
  api('/v1/tenants')
    .then((tenants) => fill(list, tenants.map((t) => tenantSection(t, message))))
    .catch((e) => {
      if (e instanceof ApiError && e.status === 403) {
        fill(list, h('p', { id: 'admin-only' }, 'Tenants and tokens are for the admin token only: sign in with it to manage them.'));
      } else {
        fill(list, errorBox(`Could not load tenants: ${e.message}`));
      }
    });
}
