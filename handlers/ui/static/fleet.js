// The fleet page: every canary, filtered by namespace and phase, most recently active first,
// refreshed by polling /ui/api/canaries.
'use strict';

(() => {
  const { el, when, since, phase, weight, replace, getJSON, poll } = siskin;
  const nsSel = document.getElementById('f-namespace');
  const phaseSel = document.getElementById('f-phase');
  const rows = document.getElementById('fleet-rows');
  const count = document.getElementById('fleet-count');
  const errBox = document.getElementById('fleet-error');
  let last = null;

  function keepNamespaces(canaries) {
    const have = new Set(Array.from(nsSel.options).map((o) => o.value));
    const all = Array.from(new Set(canaries.map((c) => c.namespace))).sort();
    for (const ns of all) {
      if (!have.has(ns)) nsSel.appendChild(el('option', { value: ns }, ns));
    }
  }

  function render() {
    if (!last) return;
    const ns = nsSel.value, ph = phaseSel.value;
    const shown = last.canaries.filter((c) => (!ns || c.namespace === ns) && (!ph || c.phase === ph));
    const trs = shown.map((c) => el('tr', { 'data-key': c.namespace + '/' + c.name },
      el('td', { 'data-label': 'Namespace' }, c.namespace),
      el('td', { 'data-label': 'Name', class: 'name' }, el('a', { href: '/ui/canaries/' + encodeURIComponent(c.namespace) + '/' + encodeURIComponent(c.name) }, c.name)),
      el('td', { 'data-label': 'Phase' }, phase(c.phase)),
      el('td', { 'data-label': 'Weight', class: 'weight' }, ...weight(c.weight)),
      el('td', { 'data-label': 'Failed checks', class: 'checks' + (c.failedChecks > 0 ? ' bad' : '') }, c.failedChecks + ' / ' + c.threshold),
      el('td', { 'data-label': 'Last transition' }, el('time', { datetime: c.lastTransitionTime }, when(c.lastTransitionTime))),
      el('td', { 'data-label': 'Last activity' }, since(c.lastStepAt, last.now)),
      el('td', { 'data-label': 'Message', class: 'msg' }, c.message || '')));
    if (trs.length === 0) {
      trs.push(el('tr', null, el('td', { colspan: 8 }, 'No canaries' + (ns || ph ? ' match the filter.' : '.'))));
    }
    replace(rows, trs);
    count.textContent = shown.length + ' of ' + last.canaries.length;
  }

  function filtersChanged() {
    const q = new URLSearchParams();
    if (nsSel.value) q.set('namespace', nsSel.value);
    if (phaseSel.value) q.set('phase', phaseSel.value);
    history.replaceState(null, '', '/ui/' + (q.toString() ? '?' + q : ''));
    render();
  }
  nsSel.addEventListener('change', filtersChanged);
  phaseSel.addEventListener('change', filtersChanged);

  poll(async () => {
    try {
      last = await getJSON('/ui/api/canaries');
      keepNamespaces(last.canaries);
      errBox.hidden = !last.error;
      errBox.textContent = last.error || '';
      render();
    } catch (e) {
      errBox.hidden = false;
      errBox.textContent = 'Cannot refresh: ' + e.message;
    }
  });
})();
