// `pensieve pull` of a vision model's repo (issue 17): the projector (mmproj GGUF) comes with the model, and
// is found beside it afterwards; projector files are never taken for the model.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { pickGguf, pickProjector } from '../src/model/hub.js';
import { pullModel } from '../src/model/pull.js';
import { findLocalModel, findLocalProjector } from '../src/model/store.js';
import { startFakeHub } from './helpers/fake-hub.js';

const REPO = 'acme/seeing-GGUF';
const model = randomBytes(2000);
const projector = randomBytes(500);

t.test('the projector is downloaded with the model, and found beside it', async (t) => {
  const hub = await startFakeHub({
    [`${REPO}/seeing-Q4_K_M.gguf`]: model,
    [`${REPO}/mmproj-seeing-f16.gguf`]: projector,
    [`${REPO}/mmproj-seeing-bf16.gguf`]: randomBytes(10),
    'acme/blind-GGUF/blind-Q4_K_M.gguf': randomBytes(10),
  });
  t.teardown(() => hub.close());
  const folder = t.testdir();
  const opts = { folder, hub: { endpoint: hub.endpoint }, retryDelayMs: 0 };
  const first = await pullModel({ repo: REPO }, opts);
  t.equal(first.path, path.join(folder, 'acme', 'seeing-GGUF', 'seeing-Q4_K_M.gguf'));
  t.equal(first.projector, path.join(folder, 'acme', 'seeing-GGUF', 'mmproj-seeing-f16.gguf'), 'the f16 projector of two');
  t.ok(readFileSync(first.projector!).equals(projector));
  t.same(await pullModel({ repo: REPO }, opts), { path: first.path, downloaded: false, projector: first.projector }, 'found again, with its projector');
  t.equal(await findLocalModel(folder, { repo: REPO }), first.path, 'the projector is not a second model of the repo');
  t.equal(await findLocalProjector(folder, first.path), first.projector);
  t.equal(await findLocalProjector(t.testdir(), first.path), undefined, 'only beside models of the models folder');
  const named = await pullModel({ repo: REPO, file: 'seeing-Q4_K_M.gguf' }, { ...opts, folder: t.testdir() });
  t.match(named.projector, /mmproj-seeing-f16\.gguf$/, 'a named file brings the projector too');
  t.equal((await pullModel({ repo: 'acme/blind-GGUF' }, opts)).projector, undefined, 'a repo without a projector');
});

t.test('projector files are not models', async (t) => {
  t.equal(pickGguf('a/b', ['m-Q8_0.gguf', 'mmproj-m-f16.gguf']), 'm-Q8_0.gguf');
  t.equal(pickProjector(['m.gguf', 'mmproj-BF16.gguf', 'mmproj-Q8_0.gguf']), 'mmproj-BF16.gguf');
  t.equal(pickProjector(['m.gguf']), undefined);
});
