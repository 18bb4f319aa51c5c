// Refuses to serve the network with the key everyone knows: the default key (or none at all) is only
// safe on loopback.
import { ConfigError, type PensieveConfig } from '../config.js';
import { isLoopback } from '../api/auth.js';

/** server.api_keys of config/pensieve.toml. */
export const DEFAULT_API_KEY = 'pensieve-local-key';

/** Throws ConfigError (exit code 2 from the CLI) when server.host is not loopback and the keys are not private. */
export function assertSafeExposure({ server }: PensieveConfig): void {
  if (server.host === 'localhost' || isLoopback(server.host)) return;
  if (server.apiKeys.length === 0)
    throw new ConfigError(`refusing to listen on ${server.host} with no API key: set server.api_keys to a secret key, or listen on 127.0.0.1`);
  if (server.apiKeys.includes(DEFAULT_API_KEY))
    throw new ConfigError(
      `refusing to listen on ${server.host} with the default API key '${DEFAULT_API_KEY}': set server.api_keys (or PENSIEVE_SERVER_API_KEYS) to a secret key, or listen on 127.0.0.1`,
    );
}
