// `pensieve start`: load a model and serve the API, in the foreground or (--daemon) in the background.
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import type { LoadedConfig, PensieveConfig } from '../config.js';
import { Engine } from '../engine/engine.js';
import { buildServer, type ServerState } from '../server/app.js';
import { exitOnSignals } from '../server/shutdown.js';
import { PreparePool, visionSettingsOf } from '../chat/prepare-pool.js';
import { imageOptionsOf } from '../api/images.js';
import type { ModelInfo } from '../api/models.js';
import { engineSettings } from '../engine/settings.js';
import { renderPlan } from '../model/memory-plan.js';
import { preflight, PreflightError } from '../model/preflight.js';
import { startDaemon } from './daemon.js';
import { CliError, ExitCode } from './errors.js';
import { localModelPath, projectorPath } from './model-ref.js';
import { help, loadWithFlags, SERVER_OPTIONS } from './shared.js';

const USAGE = `Usage: pensieve start [options]

Loads a model and serves the Anthropic Messages API (foreground; Ctrl-C stops it).

Options:
  --model REF      GGUF file, Hugging Face owner/repo[/file.gguf], or alias (\`pensieve models
                   --available\`); default: model.path in the config, else qwen3-4b. A hub model that is not
                   downloaded yet is downloaded first.
  --port N         port to listen on (default 7777)
  --host H         address to bind (default 127.0.0.1)
  --config FILE    TOML config file (see config/pensieve.toml)
  --daemon         run in the background: writes pensieve-<port>.pid and pensieve-<port>.log
                   in the state folder, returns once the server is ready; \`pensieve stop\` stops it
  -h, --help       show this help

The memory plan (KV type, pool of KV cells, longest context; see \`pensieve validate\`) is
printed on stderr before the model loads.

Exit codes: 0 ok (the server stopped cleanly, or --daemon: it is ready), 1 the model could not be
downloaded, does not fit in memory, or failed to load, 2 bad usage or config.
`;

const OPTIONS = { ...SERVER_OPTIONS, model: { type: 'string' }, daemon: { type: 'boolean' } } as const;

/** The model as the API names it: the file name without .gguf. */
async function modelInfoOf(modelPath: string): Promise<ModelInfo> {
  const { mtime } = await stat(modelPath);
  const id = basename(modelPath).replace(/\.gguf$/i, '');
  return { id, displayName: id, createdAt: mtime.toISOString() };
}

/**
 * The config with model.path replaced by a checked local file (downloaded if need be), and the memory
 * plan resolved: engine.kv_type, engine.pool_tokens and engine.max_context as this machine holds them
 * (src/model/memory-plan.ts). The plan goes to stderr; one that does not fit is refused with advice.
 */
async function prepareModel({ config }: LoadedConfig): Promise<PensieveConfig> {
  const modelPath = await localModelPath(config, true);
  const mmproj = await projectorPath(config, modelPath);
  try {
    const { plan } = await preflight(modelPath, config, undefined, mmproj || undefined);
    process.stderr.write(`pensieve: ${renderPlan(plan)}\n`);
    if (!plan.fits) process.stderr.write('pensieve: this plan does not fit in memory, but model.check_memory = false\n');
    return {
      ...config,
      model: { ...config.model, path: modelPath, mmproj },
      engine: { ...config.engine, kvType: plan.kvType, poolTokens: plan.poolTokens, maxContext: plan.maxContext },
    };
  } catch (err) {
    if (err instanceof PreflightError) throw new CliError(err.message);
    throw err;
  }
}

export async function run(args: string[]): Promise<ExitCode | undefined> {
  const { values } = parseArgs({ args, options: OPTIONS });
  if (values.help) return help(USAGE);
  const config = await prepareModel(loadWithFlags(values));
  if (values.daemon) return startDaemon(args, config);

  const settings = engineSettings(config);
  const state: ServerState = {};
  const vision = visionSettingsOf(settings);
  const pool = new PreparePool({ modelPath: settings.modelPath, threads: 2, images: imageOptionsOf(config), vision });
  const app = await buildServer({ config, state, pool, model: await modelInfoOf(settings.modelPath) });
  await app.listen({ host: config.server.host, port: config.server.port });
  app.log.info(
    { model: settings.modelPath, ...(settings.mmproj && { projector: settings.mmproj }), slots: settings.slots, poolTokens: settings.poolTokens, maxContext: settings.maxContext, kvType: settings.kvType, threads: settings.threads },
    'loading model',
  );
  try {
    state.engine = await Engine.start(settings, (level, message) => app.log[level]({ source: 'engine' }, message));
  } catch (err) {
    state.loadError = err as Error;
    app.log.error(err, 'failed to load the model');
    await app.close();
    await pool.close();
    return ExitCode.Failure;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.server.port;
  const host = config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host;
  app.log.info({ model: state.engine.model.description, dashboard: `http://${host}:${port}/` }, 'ready');

  exitOnSignals(app, state, pool, config.server.shutdownGraceSeconds);
  return undefined;
}
