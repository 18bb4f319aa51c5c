// What several commands share: the server flags, loading the config with them, and the server's URL.
import { loadConfig, type LoadedConfig } from '../config.js';
import { UsageError } from './errors.js';

/** Flags that locate the config and the server: start, stop, status, config and validate take them. */
export const SERVER_OPTIONS = {
  config: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const SERVER_FLAGS_HELP = `  --config FILE    TOML config file (see config/pensieve.toml)
  --host H         address of the server (default 127.0.0.1)
  --port N         port of the server (default 7777)
  -h, --help       show this help`;

export interface ServerFlags {
  config?: string;
  host?: string;
  port?: string;
  model?: string;
}

/** The config with the flags applied on top, as `start` would see it. */
export function loadWithFlags(flags: ServerFlags): LoadedConfig {
  const port = flags.port === undefined ? undefined : Number(flags.port);
  if (port !== undefined && !Number.isInteger(port)) throw new UsageError(`--port must be an integer, got ${flags.port}`);
  return loadConfig({ file: flags.config, overrides: { server: { host: flags.host, port }, model: { path: flags.model } } });
}

/** Where a client reaches a server bound to `host`: a wildcard bind is reached on loopback. */
export function serverUrl(host: string, port: number): string {
  const reach = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${reach.includes(':') ? `[${reach}]` : reach}:${port}`;
}

/** Writes a command's help to stdout and returns the exit code for it. */
export function help(usage: string): 0 {
  process.stdout.write(usage.endsWith('\n') ? usage : `${usage}\n`);
  return 0;
}
