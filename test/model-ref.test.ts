// model.path (--model) to a local file: what is not a model file is a usage error (exit code 2) that says why.
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { localModelPath } from '../src/cli/model-ref.js';
import { UsageError } from '../src/cli/errors.js';

const withModel = (modelPath: string) => loadConfig({ env: {}, overrides: { model: { path: modelPath } } }).config;

t.test('a directory is refused as a model file, by name', async (t) => {
  const folder = mkdtempSync(join(tmpdir(), 'pensieve-model-dir-'));
  await t.rejects(localModelPath(withModel(folder), false), new UsageError(`model path is a directory, not a GGUF file: ${folder}`));
});

t.test('a missing file is refused as such', async (t) => {
  const missing = join(tmpdir(), 'pensieve-no-such-model.gguf');
  await t.rejects(localModelPath(withModel(missing), false), new UsageError(`model file not found: ${missing}`));
});
