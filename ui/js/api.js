// The dashboard's only back end: Caisson's public REST API, on this origin.
//
// The token is kept in sessionStorage: it lasts as long as this tab and is
// never written anywhere else (no cookie, no URL, no localStorage).

const TOKEN_KEY = 'caisson.token';

export const session = {
  /** The pasted token, or null (open mode or signed out). */
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  /** Called when the API answers 401: the token is missing or revoked. */
  onUnauthorized: () => {},
};

/** An error answer of the API: `{"error": {"code", "message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  // The header open mode asks of requests that change something; sent on
  // every request so that GETs and POSTs look alike.
  const h = { 'X-Caisson-Client': 'caisson-ui', ...extra };
  const token = session.token;
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function failure(res, handle401 = true) {
  let code = `http_${res.status}`;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // Not an API error body (a proxy's page, say): keep the status line.
  }
  if (res.status === 401 && handle401) session.onUnauthorized();
  return new ApiError(res.status, code, message);
}

/**
 * Calls the API. `json` is sent as a JSON body; the answer is parsed as
 * JSON unless `raw` is set, when the Response itself is returned. A 401
 * signs out (through `session.onUnauthorized`) unless `handle401` is false.
 */
export async function api(
  path,
  { method = 'GET', json, body, signal, raw = false, contentType, handle401 = true } = {},
) {
  const extra = {};
  if (json !== undefined) {
    body = JSON.stringify(json);
    extra['Content-Type'] = 'application/json';
  } else if (contentType) {
    extra['Content-Type'] = contentType;
  }
  const res = await fetch(path, {
    method,
    body,
    signal,
    headers: headers(extra),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!res.ok) throw await failure(res, handle401);
  return raw ? res : res.json();
}

/** `/v1/...` with a query string from the non-empty entries of `query`. */
export function path(base, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== '') params.set(key, value);
  }
  const qs = params.toString();
  return qs ? `${base}?${qs}` : base;
}

/** Whether the server answers without a token (open loopback mode). */
export async function probeOpen() {
  const res = await fetch('/v1/runs?limit=1', {
    headers: { 'X-Caisson-Client': 'caisson-ui' },
    cache: 'no-store',
    credentials: 'omit',
  });
  return res.ok;
}

/**
 * Follows a run's log over the API's Server-Sent Events endpoint
 * (`/v1/runs/{id}/logs?follow=true`). EventSource cannot send a bearer
 * token, so the stream is read with fetch and parsed here. Calls
 * `onLine(line)` for each log line and `onEnd(state)` once the run has
 * ended and every line has been sent. A connection that drops before the
 * end is reopened after the last line seen. Ends when `signal` aborts.
 */
export async function followLog(id, { signal, onLine, onEnd, onError }) {
  let after = 0;
  let retries = 0;
  while (!signal.aborted) {
    try {
      const res = await api(path(`/v1/runs/${encodeURIComponent(id)}/logs`, { follow: 'true', after }), {
        signal,
        raw: true,
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        retries = 0;
        buffer += value.replaceAll('\r\n', '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (!event) continue;
          if (event.type === 'log') {
            const line = JSON.parse(event.data);
            after = Math.max(after, line.seq);
            onLine(line);
          } else if (event.type === 'end') {
            onEnd(JSON.parse(event.data).state);
            return;
          } else if (event.type === 'error') {
            const body = JSON.parse(event.data);
            onError(new ApiError(401, body.error?.code, body.error?.message));
            return;
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      // A refusal (not found, too many streams, signed out) will not get
      // better by asking again.
      if (e instanceof ApiError) {
        onError(e);
        return;
      }
    }
    retries += 1;
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** retries)));
  }
}

function parseEvent(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // keep-alive comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  return data.length ? { type, data: data.join('\n') } : null;
}
