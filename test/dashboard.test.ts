// The dashboard's data without a browser: the request history (in flight, the ring of recent requests,
// hits per session, the ten-minute series) and the hub that builds snapshots only while a page is open.
import t from 'tap';
import { RequestHistory } from '../src/server/dashboard/history.js';
import { SnapshotHub } from '../src/server/dashboard/hub.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('requests move from in flight to the ring of recent ones, newest first, the oldest dropped', async (t) => {
  const history = new RequestHistory({ recent: 3 });
  const records = Array.from({ length: 5 }, (_, i) => history.begin(`r${i}`, 1000 + i));
  t.same(history.inFlight().map((r) => r.id), ['r0', 'r1', 'r2', 'r3', 'r4']);
  t.same(history.recent(), []);
  for (const record of records.slice(0, 4)) history.end(record, 2000, 200);
  t.same(history.inFlight().map((r) => r.id), ['r4'], 'ended requests are no longer in flight');
  t.same(history.recent().map((r) => r.id), ['r3', 'r2', 'r1'], 'the last three, newest first');
  history.end(records[4], 2500, 499);
  t.same(history.recent().map((r) => r.id), ['r4', 'r3', 'r2']);
  t.match(history.recent()[0], { state: 'done', status: 499, durationMs: 1496 });
  history.end(records[4], 3000, 200);
  t.equal(history.recent()[0].status, 499, 'ending twice changes nothing');
});

t.test('hits per session: totals of the requests that reached the engine, most recently active first, bounded', async (t) => {
  const history = new RequestHistory({ sessions: 2 });
  const request = (id: string, session: string | undefined, prompt: number, cached: number, at: number) => {
    const record = history.begin(id, at);
    record.session = session;
    record.promptTokens = prompt;
    record.cachedTokens = cached;
    history.end(record, at + 10, 200);
  };
  request('1', 'a', 100, 0, 1000);
  request('2', 'a', 120, 100, 2000);
  request('3', 'b', 50, 0, 3000);
  request('4', undefined, 50, 40, 3500);
  request('5', 'b', 0, 0, 3600); // refused before the engine: no prompt
  t.same(history.sessions(), [
    { session: 'b', requests: 1, promptTokens: 50, cachedTokens: 0, lastAt: 3010 },
    { session: 'a', requests: 2, promptTokens: 220, cachedTokens: 100, lastAt: 2010 },
  ]);
  request('6', 'c', 10, 5, 4000);
  t.same(history.sessions().map((s) => s.session), ['c', 'b'], 'the least recently active session goes');
});

t.test('series: per-second rates from running totals, requests as points, ten minutes kept', async (t) => {
  const history = new RequestHistory({ windowMs: 10_000 });
  const counters = (decoded: number, prefilled: number) => ({ decodedTokens: decoded, prefilledTokens: prefilled, kvCellsUsed: 7, rssBytes: 1 << 20 });
  history.sample(1000, counters(0, 0));
  t.same(history.rateSeries(), [], 'the first sample sets the baseline');
  history.sample(2000, counters(50, 400));
  history.sample(2500, counters(60, 400));
  t.same(history.rateSeries(), [
    { at: 2000, generatedPerSecond: 50, prefilledPerSecond: 400, rssBytes: 1 << 20, kvCellsUsed: 7 },
    { at: 2500, generatedPerSecond: 20, prefilledPerSecond: 0, rssBytes: 1 << 20, kvCellsUsed: 7 },
  ]);
  history.sample(60_000, counters(2 ** 31 - 10, 400));
  t.equal(history.rateSeries().length, 0, 'after a gap (no page open) there is no rate, and old samples left the window');
  history.sample(61_000, counters(-(2 ** 31) + 20, 400)); // the engine's int32 counter wrapped
  t.equal(history.rateSeries()[0].generatedPerSecond, 30, 'a wrapped counter still gives its difference');

  const record = history.begin('x', 60_500);
  record.promptTokens = 200;
  record.cachedTokens = 150;
  record.ttftMs = 120;
  history.end(record, 61_000, 200);
  const refused = history.begin('y', 61_000);
  history.end(refused, 61_001, 400);
  t.same(history.requestSeries(), [{ at: 61_000, ttftMs: 120, hitRate: 0.75 }], 'a refused request makes no point');
  history.sample(72_000, counters(2000, 400));
  t.same(history.requestSeries(), [], 'points leave the window too');
});

t.test('the hub builds nothing while no page is open, once per tick for all pages, and stops with the last', async (t) => {
  let builds = 0;
  const hub = new SnapshotHub(async () => `frame ${++builds}`, 50);
  t.teardown(() => hub.stop());
  await sleep(200);
  t.equal(builds, 0, 'no page, no snapshot');
  const a: string[] = [];
  const b: string[] = [];
  const removeA = hub.add((frame) => void a.push(frame));
  await sleep(10);
  t.same(a, ['frame 1'], 'a new page gets a snapshot at once');
  const removeB = hub.add((frame) => void b.push(frame));
  await sleep(180);
  t.ok(a.length >= 4, `then one per interval (${a.length})`);
  const shared = b.filter((frame) => a.includes(frame));
  t.ok(shared.length >= b.length - 1, 'each tick builds one snapshot for every page');
  removeA();
  removeB();
  t.equal(hub.size, 0);
  const after = builds;
  await sleep(200);
  t.equal(builds, after, 'with the last page gone, nothing more is built');

  const slow: string[] = [];
  let release!: () => void;
  const removeSlow = hub.add(async (frame) => {
    slow.push(frame);
    await new Promise<void>((resolve) => (release = resolve));
  });
  await sleep(200);
  t.equal(slow.length, 1, 'a page still writing its last frame skips the next ones');
  release();
  await sleep(80);
  t.equal(slow.length, 2, 'and gets the next one once written');
  release();
  removeSlow();
});

t.test('a failing build is reported and the hub goes on', async (t) => {
  const errors: unknown[] = [];
  let calls = 0;
  const hub = new SnapshotHub(async () => {
    if (++calls === 1) throw new Error('no engine');
    return 'ok';
  }, 30, (err) => errors.push(err));
  const frames: string[] = [];
  const remove = hub.add((frame) => void frames.push(frame));
  await sleep(100);
  remove();
  t.match(errors, [{ message: 'no engine' }]);
  t.ok(frames.includes('ok'));
});
