// The hub downloader against a local server that behaves like Hugging Face: redirects, sha256 in
// X-Linked-Etag, Range requests, dropped connections, corrupt bodies.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { download, partialPath } from '../src/model/download.js';
import { hubOptions, parseHubRef, pickGguf, resolveUrl } from '../src/model/hub.js';
import { pullModel } from '../src/model/pull.js';
import { findLocalModel, listLocalModels, removeLocalModel } from '../src/model/store.js';
import { startFakeHub, type FakeHub } from './helpers/fake-hub.js';

const REPO = 'acme/tiny-GGUF';
const FILE = 'tiny-Q4_K_M.gguf';
const data = randomBytes(300_000);
const sha = createHash('sha256').update(data).digest('hex');

let hub: FakeHub;
t.before(async () => {
  hub = await startFakeHub({ [`${REPO}/${FILE}`]: data, [`${REPO}/tiny-Q8_0.gguf`]: randomBytes(1000), 'acme/one/only.gguf': randomBytes(10) });
});
t.teardown(() => hub.close());
t.beforeEach(() => {
  hub.faults = {};
  hub.requests.length = 0;
});

const url = () => resolveUrl({ endpoint: hub.endpoint }, REPO, FILE);
const get = (opts: Partial<Parameters<typeof download>[0]> & { dest: string }) => download({ url: url(), retryDelayMs: 0, ...opts });
const gets = () => hub.requests.filter((r) => r.method === 'GET' && r.url.startsWith('/cdn/'));

t.test('follows the redirect, verifies the sha256 and renames into place', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  const seen: [number, number | undefined][] = [];
  const result = await get({ dest, onProgress: (done, total) => seen.push([done, total]) });
  t.same(result, { path: dest, size: data.length, sha256: sha, resumedFrom: 0 });
  t.ok(readFileSync(dest).equals(data));
  t.notOk(existsSync(partialPath(dest)));
  t.same(seen.at(-1), [data.length, data.length], 'progress ends at the total');
  t.ok(seen.every(([done], i) => i === 0 || done > seen[i - 1]![0]), 'progress only grows');
  t.same(
    hub.requests.map((r) => [r.method, r.url.split('/')[1]]),
    [['HEAD', 'acme'], ['GET', 'acme'], ['GET', 'cdn']],
    'HEAD on the hub (stops at the redirect), then GET through the redirect',
  );
});

t.test('resumes from a .partial file with a Range request', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  writeFileSync(partialPath(dest), data.subarray(0, 100_000));
  const result = await get({ dest });
  t.equal(result.resumedFrom, 100_000);
  t.ok(readFileSync(dest).equals(data));
  t.same(gets().map((r) => r.range), ['bytes=100000-']);
});

t.test('a dropped connection is resumed where it stopped', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  hub.faults = { cuts: [120_000] };
  await get({ dest });
  t.ok(readFileSync(dest).equals(data));
  const ranges = gets().map((r) => r.range);
  t.equal(ranges.length, 2);
  t.equal(ranges[0], undefined);
  t.match(ranges[1], /^bytes=\d+-$/);
  t.ok(Number(/\d+/.exec(ranges[1]!)![0]) > 0, 'the second request starts after the bytes on disk');
});

t.test('a 503 is retried like a dropped connection', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  hub.faults = { unavailable: 2 };
  await get({ dest });
  t.ok(readFileSync(dest).equals(data));
  t.equal(gets().length, 3);
});

t.test('an interrupted download that gave up is resumed by the next one', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  // After the first cut, transfers die at once: no progress, so the 2 retries run out.
  hub.faults = { cuts: [50_000, 0, 0, 0] };
  await t.rejects(get({ dest, retries: 2 }), { name: 'DownloadError', message: /gave up after 2 retries/ });
  t.same(hub.faults.cuts, [], 'one transfer with progress, then three without');
  t.notOk(existsSync(dest), 'nothing at the destination');
  const kept = readFileSync(partialPath(dest)).length;
  t.ok(kept > 0 && kept < data.length, `the partial file keeps ${kept} bytes`);
  t.ok(readFileSync(partialPath(dest)).equals(data.subarray(0, kept)), 'a prefix of the file');

  hub.faults = {};
  hub.requests.length = 0;
  const result = await get({ dest });
  t.equal(result.resumedFrom, kept);
  t.same(gets().map((r) => r.range), [`bytes=${kept}-`]);
  t.ok(readFileSync(dest).equals(data));
});

t.test('a corrupt download is rejected and deleted', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  hub.faults = { corrupt: true };
  await t.rejects(get({ dest }), { name: 'DownloadError', message: /sha256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64}; the download was deleted/ });
  t.notOk(existsSync(dest));
  t.notOk(existsSync(partialPath(dest)));
});

t.test('a partial file that does not match is discarded and the download starts over', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  writeFileSync(partialPath(dest), randomBytes(1000));
  const result = await get({ dest });
  t.ok(readFileSync(dest).equals(data));
  t.equal(result.resumedFrom, 1000);
  t.same(gets().map((r) => r.range), ['bytes=1000-', undefined], 'resumed, failed the check, then fetched whole');
});

t.test('a server that ignores Range: start over from its full answer', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  writeFileSync(partialPath(dest), data.subarray(0, 5000));
  hub.faults = { ignoreRange: true };
  await get({ dest });
  t.ok(readFileSync(dest).equals(data));
});

t.test('a partial file longer than the file is discarded', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  writeFileSync(partialPath(dest), Buffer.concat([data, Buffer.from('extra')]));
  await get({ dest });
  t.ok(readFileSync(dest).equals(data));
});

t.test('without a sha256 from the hub, the size is checked', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  hub.faults = { noSha: true };
  const result = await get({ dest });
  t.equal(result.sha256, undefined);
  t.ok(readFileSync(dest).equals(data));
});

t.test('404 is an error that names the URL', async (t) => {
  const dest = path.join(t.testdir(), 'm.gguf');
  await t.rejects(download({ url: resolveUrl({ endpoint: hub.endpoint }, REPO, 'nope.gguf'), dest }), {
    name: 'DownloadError',
    message: /nope\.gguf: not found \(404\)/,
  });
  t.notOk(existsSync(partialPath(dest)));
});

t.test('pullModel: picks the Q4_K_M file of a repo, stores it as owner/repo/file, then finds it', async (t) => {
  const folder = t.testdir();
  const opts = { folder, hub: { endpoint: hub.endpoint }, retryDelayMs: 0 };
  const first = await pullModel({ repo: REPO }, opts);
  t.equal(first.downloaded, true);
  t.equal(first.path, path.join(folder, 'acme', 'tiny-GGUF', FILE));
  t.ok(readFileSync(first.path).equals(data));
  const again = await pullModel({ repo: REPO, file: FILE }, opts);
  t.same(again, { path: first.path, downloaded: false });
  t.equal(await findLocalModel(folder, { repo: REPO }), first.path);
  t.equal((await pullModel({ repo: 'acme/one' }, opts)).path, path.join(folder, 'acme', 'one', 'only.gguf'), 'the only GGUF');

  writeFileSync(path.join(folder, 'acme', 'one', 'other.gguf.partial'), 'x');
  t.same(
    (await listLocalModels(folder)).map((m) => [m.name, m.size, m.partial]),
    [
      ['acme/one/only.gguf', 10, false],
      ['acme/one/other.gguf', 1, true],
      [`${REPO}/${FILE}`, data.length, false],
    ],
  );
  t.same(await removeLocalModel(folder, { repo: 'acme/one' }), [
    path.join(folder, 'acme', 'one', 'only.gguf'),
    path.join(folder, 'acme', 'one', 'other.gguf.partial'),
  ]);
  t.notOk(existsSync(path.join(folder, 'acme', 'one')), 'the emptied repo folder is gone');
  t.ok(existsSync(path.join(folder, 'acme')), 'its parent still holds another repo');
  await t.rejects(pullModel({ repo: 'acme/missing' }, opts), /acme\/missing: no such repo/);
});

t.test('hub references and file choice', async (t) => {
  t.same(parseHubRef('phi-3-mini'), {
    repo: 'second-state/Phi-3-mini-128k-instruct-GGUF',
    file: 'Phi-3-mini-128k-instruct-Q4_K_M.gguf',
  });
  t.same(parseHubRef('a/b'), { repo: 'a/b' });
  t.same(parseHubRef('a/b/sub/c.gguf'), { repo: 'a/b', file: 'sub/c.gguf' });
  for (const p of ['models/x.gguf', './a/b', '/a/b/c.gguf', '~/a/b', 'a', 'a/b/c.bin', 'a/b/../c.gguf', 'a\\b\\c.gguf', 'C:/a/b.gguf'])
    t.equal(parseHubRef(p), undefined, `${p} is a path`);
  t.equal(resolveUrl({ endpoint: 'http://h' }, 'a/b', 'dir/x y.gguf'), 'http://h/a/b/resolve/main/dir/x%20y.gguf');
  t.same(hubOptions({ HF_ENDPOINT: 'http://mirror/', HF_TOKEN: 'tok' }), { endpoint: 'http://mirror', token: 'tok' });
  t.equal(hubOptions({}).endpoint, 'https://huggingface.co');
  t.equal(pickGguf('r', ['a-Q8_0.gguf', 'a-Q4_K_M.gguf']), 'a-Q4_K_M.gguf');
  t.throws(() => pickGguf('r', ['a-Q8_0.gguf', 'a-Q6_K.gguf']), /several \.gguf files/);
  t.throws(() => pickGguf('r', []), /no \.gguf file/);
});
