// From model.path (a file, a hub reference, an alias, or '' for the default model) to a local file,
// downloading it when the command may.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { PensieveConfig } from '../config.js';
import { DEFAULT_MODEL, hubOptions, hubRefName, MODEL_ALIASES, parseHubRef, type HubRef } from '../model/hub.js';
import { pullModel, type PullResult } from '../model/pull.js';
import { findLocalModel, findLocalProjector } from '../model/store.js';
import { CliError, UsageError } from './errors.js';
import { progress } from './progress.js';

type ModelChoice = { kind: 'file'; path: string } | { kind: 'hub'; ref: HubRef; name: string };

/** An existing file wins over a hub reference of the same spelling. */
function modelChoice(text: string): ModelChoice {
  const name = text || DEFAULT_MODEL;
  if (text && existsSync(text)) {
    if (statSync(text).isDirectory()) throw new UsageError(`model path is a directory, not a GGUF file: ${text}`);
    return { kind: 'file', path: path.resolve(text) };
  }
  const ref = parseHubRef(name);
  if (ref) return { kind: 'hub', ref, name };
  throw new UsageError(`model file not found: ${text}`);
}

/** A hub reference given on the command line; a path is not one. */
export function hubRefArg(text: string): HubRef {
  const ref = parseHubRef(text);
  if (!ref)
    throw new UsageError(
      `not a model reference: ${text} (expected owner/repo, owner/repo/file.gguf or an alias: ${Object.keys(MODEL_ALIASES).join(', ')})`,
    );
  return ref;
}

/** Downloads with a progress bar (or lines) on stderr. */
export async function pullWithProgress(ref: HubRef, folder: string): Promise<PullResult> {
  let bar: ReturnType<typeof progress> | undefined;
  try {
    return await pullModel(ref, {
      folder,
      hub: hubOptions(),
      onStart: (file, url) => {
        process.stderr.write(`downloading ${url}\n`);
        bar = progress(path.basename(file));
      },
      onProgress: (done, total) => bar?.update(done, total),
    });
  } finally {
    bar?.end();
  }
}

/**
 * The model file to load. A hub model that is not in model.folder is downloaded when `pull` is set
 * (start), and is an error otherwise (validate).
 */
export async function localModelPath(config: PensieveConfig, pull: boolean): Promise<string> {
  const choice = modelChoice(config.model.path);
  if (choice.kind === 'file') return choice.path;
  const folder = config.model.folder;
  const local = await findLocalModel(folder, choice.ref);
  if (local) return local;
  if (!pull)
    throw new CliError(`${choice.name} is not downloaded yet; \`pensieve pull ${choice.name}\` (or \`pensieve start\`) downloads it`);
  process.stderr.write(
    config.model.path
      ? `pensieve: ${choice.name} is not downloaded yet: downloading it into ${folder}\n`
      : `pensieve: no model configured: downloading the default model, ${DEFAULT_MODEL} (${hubRefName(choice.ref)}), into ${folder}\n`,
  );
  return (await pullWithProgress(choice.ref, folder)).path;
}

/** The projector a model is served with: model.mmproj, else one pulled beside the model (a vision model's); '' for none. */
export async function projectorPath(config: PensieveConfig, modelPath: string): Promise<string> {
  return config.model.mmproj || (await findLocalProjector(config.model.folder, modelPath)) || '';
}
