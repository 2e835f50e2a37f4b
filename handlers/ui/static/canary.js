// One canary: its status, the timeline of a release (weight, each metric against its
// thresholds, failed checks, webhooks and alerts) drawn as SVG from the history, the last
// releases, the Events, and the gates. Refreshed by polling /ui/api/canaries/{ns}/{name}.
'use strict';

(() => {
  const { el, svg, when, since, duration, phase, weight, replace, getJSON, post, poll, zero } = siskin;
  const root = document.getElementById('canary');
  const ns = root.dataset.namespace, name = root.dataset.name;
  const base = '/ui/api/canaries/' + encodeURIComponent(ns) + '/' + encodeURIComponent(name);
  const $ = (id) => document.getElementById(id);
  let last = null;
  let selected = null; // the release shown; null: the newest

  function renderStatus(c, now) {
    const h1 = document.querySelector('h1');
    replace(h1, el('span', { id: 'c-name' }, c.name), ' ', phase(c.phase));
    replace($('c-weight'), ...weight(c.weight), ' of max ' + c.maxWeight + ' %');
    $('c-checks').textContent = c.failedChecks + ' / ' + c.threshold;
    $('c-checks').classList.toggle('bad', c.failedChecks > 0);
    $('c-transition').textContent = when(c.lastTransitionTime);
    $('c-next').textContent = zero(c.nextStepAt) ? '-' : when(c.nextStepAt) + ' (' + since(c.nextStepAt, now) + ')';
    $('c-message').textContent = c.message || '';
    const t = c.trigger;
    $('c-trigger').textContent = t
      ? t.kind + (t.detail ? ': ' + t.detail : '') + (t.source ? ' (from ' + t.source + ')' : '') + (zero(t.at) ? '' : ', ' + when(t.at))
      : 'none recorded';
    for (const b of document.querySelectorAll('button.gate')) {
      const g = b.dataset.gate;
      const possible = g === 'abort' ? ['Progressing', 'Waiting', 'WaitingPromotion'].includes(c.phase)
        : g === 'promote' ? ['Progressing', 'WaitingPromotion'].includes(c.phase)
          : ['Failed', 'Waiting', 'WaitingPromotion'].includes(c.phase);
      b.classList.toggle('unlikely', !possible);
      b.title = possible ? '' : 'probably refused while ' + c.phase;
    }
  }

  function renderReleases(c) {
    const trs = c.releases.map((r) => {
      const show = el('button', { type: 'button', class: 'link', 'aria-label': 'Show release ' + when(r.start) + ' on the timeline' }, 'show');
      show.addEventListener('click', () => { selected = r.id; renderTimeline(last.canary); });
      const t = r.trigger;
      return el('tr', { 'data-release': r.id, class: (selected || (c.releases[0] || {}).id) === r.id ? 'current' : '' },
        el('td', null, when(r.start)), el('td', null, phase(r.outcome)), el('td', null, duration(r.duration)),
        el('td', null, String(r.steps.length)), el('td', null, t ? t.kind + ' ' + (t.detail || '') : ''), el('td', null, show));
    });
    if (trs.length === 0) trs.push(el('tr', null, el('td', { colspan: 6 }, 'No releases recorded.')));
    replace($('release-rows'), trs);
  }

  function renderEvents(c) {
    const trs = c.events.map((e) => el('tr', { class: e.type === 'Warning' ? 'warn' : '' },
      el('td', null, when(e.time)), el('td', null, e.type), el('td', null, String(e.count)), el('td', { class: 'msg' }, e.message)));
    if (trs.length === 0) trs.push(el('tr', null, el('td', { colspan: 4 }, c.eventsError ? 'Events unavailable: ' + c.eventsError : 'No events.')));
    replace($('event-rows'), trs);
  }

  // ---- timeline ----

  const PAD_L = 58, PAD_R = 12, PANEL = 120, GAP = 26, MARKS = 34;

  function scaleX(t0, t1, w) {
    const span = Math.max(t1 - t0, 1000);
    return (t) => PAD_L + ((t - t0) / span) * (w - PAD_L - PAD_R);
  }

  function axis(g, x0, x1, y, label) {
    g.appendChild(svg('line', { x1: x0, x2: x1, y1: y, y2: y, class: 'axis' }));
    if (label) g.appendChild(svg('text', { x: 4, y: y - PANEL + 12, class: 'label' }, label));
  }

  // panel draws one series (points {t, v, ok}) over [lo, hi] with threshold lines.
  function panel(g, top, w, x, title, points, lo, hi, lines, unit) {
    const y = (v) => top + PANEL - ((v - lo) / (hi - lo || 1)) * PANEL;
    g.appendChild(svg('text', { x: PAD_L, y: top - 6, class: 'title' }, title));
    g.appendChild(svg('rect', { x: PAD_L, y: top, width: w - PAD_L - PAD_R, height: PANEL, class: 'frame' }));
    for (const v of [lo, hi]) {
      g.appendChild(svg('text', { x: PAD_L - 4, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, fmt(v) + unit));
    }
    for (const l of lines) {
      g.appendChild(svg('line', { x1: PAD_L, x2: w - PAD_R, y1: y(l.v), y2: y(l.v), class: 'threshold' },
        svg('title', null, l.label + ' ' + fmt(l.v) + unit)));
      g.appendChild(svg('text', { x: w - PAD_R - 2, y: y(l.v) - 3, class: 'tick thr', 'text-anchor': 'end' }, l.label + ' ' + fmt(l.v) + unit));
    }
    const pts = points.filter((p) => p.v !== null);
    if (pts.length) {
      g.appendChild(svg('polyline', { points: pts.map((p) => x(p.t) + ',' + y(p.v)).join(' '), class: 'series' }));
    }
    for (const p of points) {
      const cy = p.v === null ? top + PANEL - 4 : y(p.v);
      g.appendChild(svg('circle', { cx: x(p.t), cy, r: p.ok ? 2.5 : 4, class: p.ok ? 'pt' : 'pt fail' },
        svg('title', null, when(new Date(p.t).toISOString()) + ': ' + p.text)));
    }
  }

  const fmt = (v) => (Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 100) / 100).toString();

  function renderTimeline(c) {
    const box = $('timeline');
    const rel = c.releases.find((r) => r.id === selected) || c.releases[0];
    if (!rel || rel.steps.length === 0) {
      replace(box, el('p', { class: 'muted' }, 'No release recorded yet.'));
      $('timeline-release').textContent = '';
      return;
    }
    $('timeline-release').textContent = '(' + when(rel.start) + ', ' + rel.outcome + ')';
    const steps = rel.steps;
    const t0 = new Date(steps[0].at).getTime();
    const inFlight = zero(rel.end);
    // A release in flight runs to now, but a stalled one does not squash its steps into a corner.
    const tLast = new Date(steps[steps.length - 1].at).getTime();
    const tNow = Math.min(new Date(last.now).getTime(), tLast + Math.max(60000, 0.25 * (tLast - t0)));
    const t1 = Math.max(inFlight ? Math.max(tNow, tLast) : tLast, t0 + 1000);
    const w = Math.max(300, box.clientWidth || 600);
    const x = scaleX(t0, t1, w);
    const metricNames = [];
    for (const s of steps) for (const m of s.metrics || []) if (!metricNames.includes(m.name)) metricNames.push(m.name);
    const h = GAP + PANEL + MARKS + metricNames.length * (PANEL + GAP) + 24;
    const g = svg('svg', { width: w, height: h, viewBox: '0 0 ' + w + ' ' + h, class: 'chart' });
    g.appendChild(svg('title', null, 'Release ' + when(rel.start) + ': weight and metrics per step'));

    // Weight, as a step line.
    let top = GAP;
    const pts = [];
    let prev = null;
    for (const s of steps) {
      const t = new Date(s.at).getTime();
      if (prev !== null) pts.push(x(t) + ',' + yW(prev, top));
      pts.push(x(t) + ',' + yW(s.weight, top));
      prev = s.weight;
    }
    if (inFlight && prev !== null) pts.push(x(t1) + ',' + yW(prev, top));
    g.appendChild(svg('text', { x: PAD_L, y: top - 6, class: 'title' }, 'canary weight (%)'));
    g.appendChild(svg('rect', { x: PAD_L, y: top, width: w - PAD_L - PAD_R, height: PANEL, class: 'frame' }));
    for (const v of [0, 50, 100]) g.appendChild(svg('text', { x: PAD_L - 4, y: yW(v, top) + 4, class: 'tick', 'text-anchor': 'end' }, v + ' %'));
    g.appendChild(svg('line', { x1: PAD_L, x2: w - PAD_R, y1: yW(c.maxWeight, top), y2: yW(c.maxWeight, top), class: 'threshold' },
      svg('title', null, 'max weight ' + c.maxWeight + ' %')));
    g.appendChild(svg('polyline', { points: pts.join(' '), class: 'weight-line' }));
    for (const s of steps) {
      g.appendChild(svg('circle', { cx: x(new Date(s.at).getTime()), cy: yW(s.weight, top), r: 2.5, class: 'pt' },
        svg('title', null, when(s.at) + ': ' + s.to + ', weight ' + s.weight + ' %, ' + s.decision + (s.reason ? ' (' + s.reason + ')' : ''))));
    }

    // Marks: failed checks, webhooks, alerts.
    top += PANEL + 8;
    const rows = { fail: top + 6, hook: top + 16, alert: top + 26 };
    let prevFailed = steps.length ? steps[0].failedChecks : 0;
    steps.forEach((s, i) => {
      const cx = x(new Date(s.at).getTime());
      const failedNow = s.failedChecks > (i === 0 ? 0 : prevFailed) || (s.metrics || []).some((m) => !m.ok);
      prevFailed = s.failedChecks;
      if (failedNow || s.kind === 'abort') {
        g.appendChild(svg('rect', { x: cx - 4, y: rows.fail - 4, width: 8, height: 8, class: 'mark fail' },
          svg('title', null, when(s.at) + ': ' + (s.kind === 'abort' ? 'aborted' : 'failed check ' + s.failedChecks + '/' + s.threshold) + (s.reason ? ': ' + s.reason : ''))));
      }
      if (s.kind === 'gate') {
        g.appendChild(svg('circle', { cx, cy: rows.hook, r: 4, class: 'mark gate' },
          svg('title', null, when(s.at) + ': manual gate: ' + s.decision)));
      }
      for (const hk of s.hooks || []) {
        g.appendChild(svg('polygon', { points: (cx - 4) + ',' + (rows.hook + 4) + ' ' + (cx + 4) + ',' + (rows.hook + 4) + ' ' + cx + ',' + (rows.hook - 4), class: hk.ok ? 'mark hook' : 'mark hook fail' },
          svg('title', null, when(s.at) + ': webhook ' + hk.name + ' (' + hk.type + ') ' + (hk.ok ? 'ok' : 'failed') + (hk.detail ? ': ' + hk.detail : ''))));
      }
      for (const a of s.alerts || []) {
        g.appendChild(svg('polygon', { points: cx + ',' + (rows.alert - 4) + ' ' + (cx + 4) + ',' + rows.alert + ' ' + cx + ',' + (rows.alert + 4) + ' ' + (cx - 4) + ',' + rows.alert, class: 'mark alert' },
          svg('title', null, when(s.at) + ': alert (' + a.severity + ') ' + a.message)));
      }
    });
    for (const [k, label] of [['fail', 'checks'], ['hook', 'hooks'], ['alert', 'alerts']]) {
      g.appendChild(svg('text', { x: PAD_L - 4, y: rows[k] + 3, class: 'tick', 'text-anchor': 'end' }, label));
    }

    // One panel per metric, its value against its thresholds.
    top += MARKS;
    for (const mn of metricNames) {
      top += GAP;
      const points = [];
      const lines = [];
      let lo = Infinity, hi = -Infinity;
      for (const s of steps) {
        const m = (s.metrics || []).find((mm) => mm.name === mn);
        if (!m) continue;
        const v = m.err || m.noData ? null : m.value;
        points.push({ t: new Date(s.at).getTime(), v, ok: m.ok, text: m.err ? 'error: ' + m.err : m.noData ? 'no data' : fmt(m.value) + (m.ok ? '' : ' (' + (m.message || 'failed') + ')') });
        if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        for (const [key, label] of [['min', 'min'], ['max', 'max'], ['threshold', 'threshold']]) {
          if (m[key] !== undefined && m[key] !== null && !lines.some((l) => l.label === label)) lines.push({ v: m[key], label });
        }
      }
      for (const l of lines) { lo = Math.min(lo, l.v); hi = Math.max(hi, l.v); }
      if (!isFinite(lo)) { lo = 0; hi = 1; }
      if (lo === hi) { lo -= 1; hi += 1; }
      const pad = (hi - lo) * 0.1;
      const unit = mn === 'request-duration' ? ' ms' : mn === 'request-success-rate' ? ' %' : '';
      panel(g, top, w, x, mn, points, lo - pad, hi + pad, lines, unit);
      top += PANEL;
    }
    // Time axis.
    axis(g, PAD_L, w - PAD_R, h - 18);
    g.appendChild(svg('text', { x: PAD_L, y: h - 4, class: 'tick' }, when(new Date(t0).toISOString())));
    g.appendChild(svg('text', { x: w - PAD_R, y: h - 4, class: 'tick', 'text-anchor': 'end' }, '+' + duration((t1 - t0) * 1e6) + (inFlight ? ' (now)' : '')));
    replace(box, g);
    box.setAttribute('aria-label', 'Release ' + when(rel.start) + ', ' + rel.outcome + ': ' + steps.length + ' steps, weight now ' + steps[steps.length - 1].weight + ' %');
  }

  function yW(v, top) { return top + PANEL - (v / 100) * PANEL; }

  // ---- gates ----

  const dialog = $('confirm');
  const words = {
    promote: 'Promote NAME now? The remaining analysis is skipped and the canary revision goes to the primary.',
    abort: 'Abort the release of NAME? All traffic goes back to the primary at once and the canary is scaled down.',
    resume: 'Resume NAME? A failed release of the same revision starts again; a waiting one goes on.',
  };
  let pending = null;
  if (dialog) {
    for (const b of document.querySelectorAll('button.gate')) {
      b.addEventListener('click', () => {
        pending = b.dataset.gate;
        $('confirm-text').textContent = words[pending].replace('NAME', ns + '/' + name);
        const isAbort = pending === 'abort';
        $('confirm-reason').hidden = !isAbort;
        $('confirm-reason-label').hidden = !isAbort;
        $('confirm-ok').textContent = 'Confirm ' + pending;
        dialog.showModal();
      });
    }
    dialog.addEventListener('close', async () => {
      const gate = pending;
      pending = null;
      if (dialog.returnValue !== 'ok' || !gate) return;
      const out = $('gate-result');
      out.className = 'pending';
      out.textContent = gate + ': sending…';
      let url = base + '/' + gate;
      if (gate === 'abort' && $('confirm-reason').value.trim()) url += '?reason=' + encodeURIComponent($('confirm-reason').value.trim());
      try {
        const rep = await post(url);
        out.className = 'ok';
        out.textContent = gate + ' done: ' + rep.from + ' → ' + rep.to + ' (weight ' + rep.routing.canary + ' %)' + (rep.message ? ': ' + rep.message : '');
      } catch (e) {
        out.className = 'bad';
        out.textContent = gate + ' refused (' + e.status + '): ' + e.message;
      }
      refresh();
    });
  }

  const refresh = poll(async () => {
    try {
      last = await getJSON(base);
      const c = last.canary;
      renderStatus(c, last.now);
      renderTimeline(c);
      renderReleases(c);
      renderEvents(c);
    } catch (e) {
      $('c-message').textContent = 'Cannot refresh: ' + e.message;
    }
  });
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (last) renderTimeline(last.canary); }, 150);
  });
})();
