// The pid and log files of a server started with `start --daemon`, one pair per port, in the state folder.
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { stateFolder } from '../config.js';

export interface DaemonFiles {
  pid: string;
  log: string;
}

export function daemonFiles(port: number, env: NodeJS.ProcessEnv = process.env): DaemonFiles {
  const folder = stateFolder(env);
  return { pid: path.join(folder, `pensieve-${port}.pid`), log: path.join(folder, `pensieve-${port}.log`) };
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/**
 * Whether `pid` still looks like our server: alive and, where /proc tells, running a `start`. A pid
 * file that outlived its process (a crash, a reboot) may name an unrelated process by now.
 */
function isServer(pid: number): boolean {
  if (!processAlive(pid)) return false;
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return args.includes('start');
  } catch {
    return true; // no /proc (macOS): trust the signal check
  }
}

/** The daemon's pid; a missing or stale pid file gives undefined (and a stale one is removed). */
export function runningDaemon(files: DaemonFiles): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(files.pid, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (Number.isInteger(pid) && pid > 0 && isServer(pid)) return pid;
  rmSync(files.pid, { force: true });
  return undefined;
}
