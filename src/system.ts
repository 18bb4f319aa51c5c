// Facts about the host that defaults depend on.
import { readFileSync } from 'node:fs';
import os from 'node:os';

/**
 * Physical CPU cores: llama.cpp decodes fastest with one thread per physical core (hyper-threads only
 * contend for the same units). Linux reports them in /proc/cpuinfo; elsewhere we fall back to the
 * logical count.
 */
export function physicalCores(): number {
  if (process.platform === 'linux') {
    try {
      const cores = new Set<string>();
      let physical = '';
      for (const line of readFileSync('/proc/cpuinfo', 'utf8').split('\n')) {
        const [key, value] = line.split(':').map((s) => s?.trim());
        if (key === 'physical id') physical = value;
        else if (key === 'core id') cores.add(`${physical}/${value}`);
      }
      if (cores.size > 0) return cores.size;
    } catch {
      // fall through to the logical count
    }
  }
  return os.availableParallelism();
}
