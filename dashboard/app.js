// Pensieve's dashboard: reads /dashboard/events (server-sent events, a snapshot a second) and draws it.
// The stream is read with fetch() rather than EventSource so that the API key goes in a header, never in
// the URL (where logs and history would keep it). The key, asked once when the server wants one, stays in
// this tab's sessionStorage. Everything shown is set as text, never parsed as HTML.
'use strict';

const KEY_STORAGE = 'pensieve-dashboard-key';
const RETRY_MS = 2000;
const WINDOW_S = 600;

const $ = (id) => document.getElementById(id);

// ---- formatting ----
const int = (n) => (n === undefined || n === null ? '-' : Math.round(n).toLocaleString('en-US'));
function bytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
const seconds = (ms) => (ms === undefined || ms === null ? '-' : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`);
const percent = (part, whole) => (whole > 0 ? `${Math.round((100 * part) / whole)}%` : '-');
const clock = (at) => new Date(at).toLocaleTimeString([], { hour12: false });
function ago(at, now) {
  const s = Math.max(0, Math.round((now - at) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}
const hhmm = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
const shortSession = (s) => (s ? (s.length > 13 ? `${s.slice(0, 8)}…${s.slice(-4)}` : s) : '-');

// ---- DOM helpers ----
function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}
/** Replaces a table body's rows; shows its "empty" note when there are none. */
function fillTable(id, rows, emptyId) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows);
  if (emptyId) $(emptyId).hidden = rows.length > 0;
}
function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

// ---- charts ----
const charts = {};
function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
function chartOptions(el, series, scales, axes) {
  const text = cssColor('--muted');
  const grid = cssColor('--line');
  let latest = Date.now() / 1000;
  return {
    width: el.clientWidth || 400,
    height: 180,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true, range: () => [latest - WINDOW_S, latest] }, ...scales },
    series: [{}, ...series],
    axes: [
      { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, space: 60, values: (u, ticks) => ticks.map(hhmm) },
      ...axes.map((a) => ({ stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 50, ...a })),
    ],
    hooks: {},
    setLatest(t) { latest = t; },
  };
}
function makeChart(id, series, scales = {}, axes = [{}]) {
  const el = $(id);
  const opts = chartOptions(el, series, scales, axes);
  const chart = new uPlot(opts, [[], ...series.map(() => [])], el);
  const resize = new ResizeObserver(() => chart.setSize({ width: el.clientWidth, height: 180 }));
  resize.observe(el);
  return { chart, setLatest: opts.setLatest, destroy: () => { resize.disconnect(); chart.destroy(); } };
}
// The charts take their colours when made: a change of colour scheme makes them again, at the next snapshot.
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  for (const [name, made] of Object.entries(charts)) {
    made.destroy();
    delete charts[name];
  }
});
function createCharts() {
  const accent = cssColor('--accent');
  const accent2 = cssColor('--accent2');
  const dots = (stroke) => ({ stroke, paths: () => null, points: { show: true, size: 6, stroke, fill: stroke } });
  charts.rates = makeChart('c-rates', [
    { label: 'generated', stroke: accent, width: 2 },
    { label: 'prefilled', stroke: accent2, width: 2 },
  ]);
  charts.ttft = makeChart('c-ttft', [{ label: 'TTFT (ms)', ...dots(accent) }]);
  charts.hits = makeChart('c-hits', [{ label: 'hit %', ...dots(accent2) }], { y: { range: [0, 100] } });
  charts.memory = makeChart('c-memory', [
    { label: 'RSS (MiB)', stroke: accent, width: 2, scale: 'mib' },
    { label: 'KV pool (%)', stroke: accent2, width: 2, scale: 'pct' },
  ], { mib: {}, pct: { range: [0, 100] } }, [{ scale: 'mib' }, { scale: 'pct', side: 1, grid: { show: false } }]);
}
function drawCharts(s) {
  if (typeof uPlot === 'undefined') return;
  if (!charts.rates) createCharts();
  const now = s.at / 1000;
  const { rates, requests } = s.series;
  const data = {
    rates: [rates.t, rates.generated, rates.prefilled],
    ttft: [requests.t, requests.ttftMs],
    hits: [requests.t, requests.hitPercent],
    memory: [rates.t, rates.rssMiB, rates.kvPercent],
  };
  for (const [name, { chart, setLatest }] of Object.entries(charts)) {
    setLatest(now);
    chart.setData(data[name]);
  }
}

// ---- the snapshot ----
function renderModel(s) {
  const m = s.model;
  if (!m) {
    setText('model-line', s.status === 'error' ? `model failed to load: ${s.loadError}` : 'loading the model…');
    return;
  }
  setText('model-line', `${m.id} · ${m.description}`);
  const facts = [
    ['File', m.file], ['Architecture', m.architecture], ['Size', `${bytes(m.sizeBytes)}, ${(m.parameters / 1e9).toFixed(2)}B params`],
    ['Backend', m.backend], ['KV type', m.kvType], ['Context', `${int(m.maxContext)} per request (trained ${int(m.trainedContext)})`],
    ['Pool', `${int(m.poolCells)} cells, ${m.slots} slots`],
  ];
  const dl = $('model');
  if (dl.dataset.model === m.file) return;
  dl.dataset.model = m.file;
  dl.replaceChildren(...facts.map(([k, v]) => {
    const div = document.createElement('div');
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    dt.textContent = k;
    dd.textContent = v;
    div.append(dt, dd);
    return div;
  }));
}

function renderTiles(s) {
  const e = s.engine;
  const rates = s.series.rates;
  const last = (a) => (a.length > 0 ? a[a.length - 1] : undefined);
  setText('t-requests', int(s.requests.length));
  setText('t-requests-sub', `${s.recent.length} recent`);
  setText('t-queue', e ? int(e.queued) : '-');
  setText('t-slots', e && s.model ? `${e.slotsBusy} of ${s.model.slots} slots busy` : '');
  setText('t-kv', e && s.model ? percent(e.kvCellsUsed, s.model.poolCells) : '-');
  setText('t-kv-sub', e && s.model ? `${int(e.kvCellsUsed)} of ${int(s.model.poolCells)} cells` : '');
  setText('t-rate', last(rates.generated) === undefined ? '-' : `${last(rates.generated)} tok/s`);
  setText('t-prefill', last(rates.prefilled) === undefined ? '' : `prefill ${int(last(rates.prefilled))} tok/s`);
  setText('t-hits', e ? percent(e.cachedPromptTokens, e.promptTokens) : '-');
  setText('t-hits-sub', e ? `${int(e.cachedPromptTokens)} of ${int(e.promptTokens)} prompt tokens` : '');
  setText('t-rss', bytes(s.process.rssBytes));
  setText('t-heap', `heap ${bytes(s.process.heapUsedBytes)}, up ${Math.round(s.process.uptimeSeconds / 60)} min`);
}

function renderLive(s) {
  const rows = s.requests.map((r) => {
    const tr = document.createElement('tr');
    tr.dataset.id = r.id;
    const state = document.createElement('span');
    state.className = 'state';
    state.dataset.state = r.state;
    state.textContent = r.state;
    const stateCell = document.createElement('td');
    stateCell.append(state);
    const session = cell(shortSession(r.session), 'session');
    if (r.session) session.title = r.session;
    tr.append(session, cell(r.model ?? '-'), stateCell, cell(int(r.promptTokens), 'num'), cell(int(r.cachedTokens), 'num'),
      cell(int(r.prefilledTokens), 'num'), cell(int(r.outputTokens), 'num'), cell(seconds(s.at - r.at), 'num'));
    if (r.preview !== undefined) {
      const td = cell(r.preview, 'preview');
      tr.append(td);
    }
    return tr;
  });
  fillTable('live', rows, 'live-empty');
}

function renderCache(s) {
  const prefixes = [
    ...s.cache.memory.map((p) => ({ ...p, where: `slot ${p.slot} (memory)` })),
    ...s.cache.disk.map((p) => ({ ...p, where: 'disk' })),
  ];
  fillTable('prefixes', prefixes.map((p) => {
    const tr = document.createElement('tr');
    tr.append(cell(p.where), cell(int(p.tokens), 'num'), cell(bytes(p.bytes), 'num'), cell(ago(p.lastUsed, s.at)));
    return tr;
  }), 'prefixes-empty');
  fillTable('sessions', s.cache.sessions.map((h) => {
    const tr = document.createElement('tr');
    const session = cell(shortSession(h.session), 'session');
    session.title = h.session;
    tr.append(session, cell(int(h.requests), 'num'), cell(int(h.promptTokens), 'num'), cell(int(h.cachedTokens), 'num'),
      cell(percent(h.cachedTokens, h.promptTokens), 'num'));
    return tr;
  }), 'sessions-empty');
}

function renderRecent(s) {
  const rows = s.recent.map((r) => {
    const tr = document.createElement('tr');
    tr.dataset.id = r.id;
    tr.dataset.status = String(r.status);
    const failed = r.status >= 400 || r.error !== undefined;
    if (failed) tr.className = 'error';
    const stop = failed ? cell(r.error ?? r.stopReason ?? '', 'error-text') : cell(r.stopReason ?? '-');
    tr.append(cell(clock(r.at)), cell(r.model ?? '-'), cell(String(r.status), 'status'), cell(int(r.promptTokens), 'num'),
      cell(int(r.cachedTokens), 'num'), cell(int(r.outputTokens), 'num'), cell(seconds(r.ttftMs), 'num'),
      cell(seconds(r.durationMs), 'num'), stop);
    if (r.preview !== undefined) tr.title = r.preview;
    return tr;
  });
  fillTable('recent', rows, 'recent-empty');
}

let snapshots = 0;
function render(s) {
  renderModel(s);
  renderTiles(s);
  renderLive(s);
  renderCache(s);
  renderRecent(s);
  drawCharts(s);
  document.body.dataset.snapshots = String(++snapshots); // for tests and the curious: snapshots drawn
}

// ---- the stream ----
function setConnection(state, text) {
  const badge = $('connection');
  badge.dataset.state = state;
  badge.textContent = text;
}

function askForKey(message) {
  $('board').hidden = true;
  $('key-form').hidden = false;
  $('key-error').hidden = !message;
  $('key-error').textContent = message ?? '';
  setConnection('locked', 'key needed');
  $('key-input').focus();
}

/** Reads SSE frames ("event: …\ndata: …\n\n") from the response body and renders each snapshot. */
async function readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of frame.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (event === 'snapshot' && data.length > 0) render(JSON.parse(data.join('\n')));
    }
  }
}

async function connect() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = { accept: 'text/event-stream' };
  if (key) headers['x-api-key'] = key;
  try {
    const response = await fetch('/dashboard/events', { headers, cache: 'no-store' });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      askForKey(key ? 'That key was refused.' : undefined);
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    $('key-form').hidden = true;
    $('board').hidden = false;
    setConnection('live', 'live');
    await readEvents(response);
    setConnection('down', 'reconnecting');
  } catch {
    setConnection('down', 'server unreachable, retrying');
  }
  setTimeout(connect, RETRY_MS);
}

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $('key-input').value.trim());
  $('key-input').value = '';
  $('key-form').hidden = true;
  setConnection('connecting', 'connecting');
  connect();
});

connect();
