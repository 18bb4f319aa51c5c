// Download progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise
// (logs, pipes, a daemon's log file), so that neither fills up with carriage returns.
import { formatBytes, formatDuration } from './format.js';

const BAR_WIDTH = 30;
const REDRAW_MS = 100;
const LINE_EVERY_MS = 5000;

export interface Progress {
  update(done: number, total: number | undefined): void;
  /** Ends the bar's line. */
  end(): void;
}

export function progress(label: string, out: NodeJS.WriteStream = process.stderr): Progress {
  const started = Date.now();
  let startBytes: number | undefined;
  let last = 0;
  let drawn = false;

  const describe = (done: number, total: number | undefined) => {
    startBytes ??= done; // resumed bytes do not count toward the speed
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? (done - startBytes) / seconds : 0;
    const size = total === undefined ? formatBytes(done) : `${formatBytes(done)} / ${formatBytes(total)}`;
    const eta = total !== undefined && rate > 0 && done < total ? `, ${formatDuration((total - done) / rate)} left` : '';
    return `${size}, ${formatBytes(rate)}/s${eta}`;
  };

  return {
    update(done, total) {
      const now = Date.now();
      const finished = total !== undefined && done >= total;
      if (now - last < (out.isTTY ? REDRAW_MS : LINE_EVERY_MS) && !finished) return;
      last = now;
      const fraction = total ? Math.min(done / total, 1) : undefined;
      const percent = fraction === undefined ? '' : `${(fraction * 100).toFixed(1).padStart(5)}% `;
      if (out.isTTY) {
        const filled = Math.round((fraction ?? 0) * BAR_WIDTH);
        const bar = fraction === undefined ? '' : `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] `;
        out.write(`\r${label} ${bar}${percent}${describe(done, total)}\x1b[K`);
        drawn = true;
      } else {
        out.write(`${label}: ${percent}${describe(done, total)}\n`);
      }
    },
    end() {
      if (drawn) out.write('\n');
      drawn = false;
    },
  };
}
