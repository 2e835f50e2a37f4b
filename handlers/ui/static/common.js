// Siskin dashboard: shared helpers. Plain browser JavaScript, no build step, no library.
// Everything from the server is set with textContent or as an attribute value, never as HTML.
'use strict';

const siskin = (() => {
  const meta = (name) => {
    const m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute('content') : '';
  };

  function append(node, kids) {
    for (const k of kids) {
      if (k === null || k === undefined || k === false) continue;
      node.appendChild(typeof k === 'string' || typeof k === 'number' ? document.createTextNode(String(k)) : k);
    }
    return node;
  }

  // el builds an HTML element: attributes as attributes, strings as text nodes.
  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) n.setAttribute(k, String(v));
    }
    return append(n, kids);
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...kids) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) n.setAttribute(k, String(v));
    }
    return append(n, kids);
  }

  // zero reports Go's zero time.
  const zero = (iso) => !iso || iso.startsWith('0001-');

  function when(iso) {
    if (zero(iso)) return '-';
    return new Date(iso).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function since(iso, nowISO) {
    if (zero(iso)) return '-';
    const d = (new Date(nowISO) - new Date(iso)) / 1000;
    if (d < 0) return 'in ' + Math.round(-d) + 's';
    if (d < 60) return Math.floor(d) + 's ago';
    if (d < 3600) return Math.floor(d / 60) + 'm ago';
    if (d < 48 * 3600) return Math.floor(d / 3600) + 'h ago';
    return Math.floor(d / 86400) + 'd ago';
  }

  function duration(ns) {
    const s = Math.round(ns / 1e9);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60 ? (s % 60) + 's' : '');
    return Math.floor(s / 3600) + 'h' + Math.floor((s % 3600) / 60) + 'm';
  }

  const phase = (p) => el('span', { class: 'phase phase-' + p }, p || '-');

  const weight = (w) => [el('meter', { min: 0, max: 100, value: w, 'aria-label': 'canary weight' }, w + ' %'), ' ', el('span', { class: 'num' }, w + ' %')];

  function replace(node, ...kids) {
    node.replaceChildren();
    return append(node, kids.flat());
  }

  class HTTPError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function request(method, url, headers) {
    const resp = await fetch(url, { method, credentials: 'same-origin', headers: Object.assign({ Accept: 'application/json' }, headers || {}) });
    if (resp.status === 401) {
      location.assign('/ui/login?next=' + encodeURIComponent(location.pathname + location.search));
      throw new HTTPError(401, 'not logged in');
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) throw new HTTPError(resp.status, (body && body.error) || resp.statusText);
    return body;
  }

  const getJSON = (url) => request('GET', url);
  const post = (url) => request('POST', url, { 'X-CSRF-Token': meta('csrf-token') });

  // poll calls fn now and then every poll-ms, pausing while the page is hidden.
  function poll(fn) {
    const every = parseInt(meta('poll-ms'), 10) || 3000;
    let timer = null;
    const run = async () => {
      clearTimeout(timer);
      try { await fn(); } catch (e) { /* fn shows its own errors */ }
      if (!document.hidden) timer = setTimeout(run, every);
    };
    document.addEventListener('visibilitychange', () => { if (!document.hidden) run(); });
    run();
    return run;
  }

  return { el, svg, when, since, duration, phase, weight, replace, getJSON, post, poll, zero, meta };
})();
