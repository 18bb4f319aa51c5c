#!/usr/bin/env node
// The `pensieve` command.
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { stat } from 'node:fs/promises';
import { ConfigError, loadConfig } from './config.js';
import { Engine } from './engine/engine.js';
import { buildServer, type ServerState } from './server/app.js';
import { exitOnSignals } from './server/shutdown.js';
import { PreparePool } from './chat/prepare-pool.js';
import type { ModelInfo } from './api/models.js';
import { engineSettings } from './engine/settings.js';

const USAGE = `Usage: pensieve <command> [options]

Commands:
  start     Load a model and serve the Anthropic Messages API

Options for start:
  --model PATH     GGUF model file (or set model.path in the config)
  --port N         port to listen on (default 7777)
  --host H         address to bind (default 127.0.0.1)
  --config FILE    TOML config file (see config/pensieve.toml)
  -h, --help       show this help
`;

/** Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config. */
class UsageError extends Error {}

/** The model as the API names it: the file name without .gguf. */
async function modelInfoOf(modelPath: string): Promise<ModelInfo> {
  const { mtime } = await stat(modelPath);
  const id = basename(modelPath).replace(/\.gguf$/i, '');
  return { id, displayName: id, createdAt: mtime.toISOString() };
}

async function start(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && !Number.isInteger(port)) throw new UsageError(`--port must be an integer, got ${values.port}`);
  const { config } = loadConfig({
    file: values.config,
    overrides: { server: { host: values.host, port }, model: { path: values.model } },
  });
  if (!config.model.path) throw new UsageError('no model: pass --model PATH or set model.path in the config');
  if (!existsSync(config.model.path)) throw new UsageError(`model file not found: ${config.model.path}`);

  const settings = engineSettings(config);
  const state: ServerState = {};
  const pool = new PreparePool({ modelPath: settings.modelPath, threads: 2 });
  const app = await buildServer({ config, state, pool, model: await modelInfoOf(settings.modelPath) });
  await app.listen({ host: config.server.host, port: config.server.port });
  app.log.info({ model: settings.modelPath, slots: settings.slots, contextPerSlot: settings.contextPerSlot, threads: settings.threads }, 'loading model');
  try {
    state.engine = await Engine.start(settings);
  } catch (err) {
    state.loadError = err as Error;
    app.log.error(err, 'failed to load the model');
    await app.close();
    await pool.close();
    process.exitCode = 1;
    return;
  }
  app.log.info({ model: state.engine.model.description }, 'ready');

  exitOnSignals(app, state, pool, config.server.shutdownGraceSeconds);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (command === 'start') return start(rest);
  throw new UsageError(`unknown command: ${command}\n\n${USAGE}`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const usage = err instanceof UsageError || err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
  process.stderr.write(`pensieve: ${(err as Error).message}\n`);
  process.exit(usage ? 2 : 1);
});
