// A real Pensieve server (HTTP, prep pool, engine thread, llama.cpp) on a free loopback port, for tests.
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { DestinationStream } from 'pino';
import { loadConfig, type PensieveConfig } from '../../src/config.js';
import { Engine } from '../../src/engine/engine.js';
import { PreparePool, visionSettingsOf } from '../../src/chat/prepare-pool.js';
import { imageOptionsOf } from '../../src/api/images.js';
import { buildServer, type ServerState } from '../../src/server/app.js';
import { engineSettings } from '../../src/engine/settings.js';

export interface TestServer {
  url: string;
  config: PensieveConfig;
  app: FastifyInstance;
  engine: Engine;
  close(): Promise<void>;
}

export const TEST_KEY = 'pensieve-local-key';

/** Log lines, parsed, as the server writes them (pass `stream` as TestServerOptions.logStream). */
export function logSink(): { stream: Writable; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { stream, lines };
}

export interface TestServerOptions {
  /** Overrides of the [server], [api] and [log] sections (snake_case keys, as in the TOML). */
  server?: Record<string, unknown>;
  api?: Record<string, unknown>;
  /** The [model] section's projector (a vision model's mmproj file). */
  mmproj?: string;
  log?: Record<string, unknown>;
  /** Receives the JSON log lines. */
  logStream?: DestinationStream;
}

/**
 * `engine` overrides the config's [engine] section (snake_case keys, as in the TOML). The memory plan is
 * not made here: pool_tokens, max_context and kv_type are set (4 x 16k cells of f16 unless overridden).
 */
export async function startTestServer(
  modelPath: string,
  engine: Record<string, number | string> = {},
  pingSeconds = 5,
  options: TestServerOptions = {},
): Promise<TestServer> {
  const { config } = loadConfig({
    env: {},
    overrides: {
      server: { port: 0, ...options.server },
      model: { path: modelPath, ...(options.mmproj && { mmproj: options.mmproj }) },
      api: { ...options.api },
      log: { level: 'warn', ...options.log },
      engine: { slots: 4, pool_tokens: 65536, max_context: 16384, kv_type: 'f16', threads: 2, ...engine },
      cache: { max_mb: 0 }, // tests never write to the user's cache folder
    },
  });
  const state: ServerState = {};
  const settings = engineSettings(config);
  const vision = visionSettingsOf(settings);
  const pool = new PreparePool({ modelPath, threads: 1, images: imageOptionsOf(config), vision });
  state.engine = await Engine.start(settings);
  const app = await buildServer({ config, state, pool, model: { id: 'test-model', displayName: 'test model', createdAt: new Date(0).toISOString() }, pingSeconds, logStream: options.logStream });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    config,
    app,
    engine: state.engine,
    async close() {
      await app.close();
      await state.engine?.close();
      await pool.close();
    },
  };
}
