// Building the page. Everything the API returns (log lines, outputs,
// params, error messages, module names) reaches the page through `h` and
// `text` below, which make text nodes: data is never parsed as HTML. The
// server's Content-Security-Policy backs this up: it requires Trusted
// Types with no policy, so an `innerHTML = string` anywhere would throw.

/**
 * An element: `h('a', {class: 'x', href: '#/runs'}, 'text', child, ...)`.
 * Attributes are set with setAttribute; `on*` keys (functions) become
 * event listeners; children are nodes or strings (made text nodes), and
 * null/false/undefined children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element, like `h`: attributes by setAttribute, text as text nodes. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces `el`'s children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A `#/...` link inside the dashboard. */
export function link(route, ...children) {
  return h('a', { href: '#' + route }, ...children);
}

/** A coloured badge for a run or step state. */
export function badge(state) {
  return h('span', { class: `badge state-${state}`, 'data-state': state }, state ?? '');
}

/** A definition list from `[term, value]` pairs; null values are skipped. */
export function facts(pairs) {
  const dl = h('dl', { class: 'facts' });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined) continue;
    dl.append(h('dt', {}, term), h('dd', {}, value));
  }
  return dl;
}

/** A visible error message. */
export function errorBox(message) {
  return h('p', { class: 'error', role: 'alert' }, message);
}
