// Command-line option parsing and figures shared by the benchmarks.

function integerOption(name: string, value: string | undefined, fallback: number, min: number, what: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be ${what}, got "${value}"`);
  return n;
}

/** A positive integer command-line option, or the fallback when it was not given. */
export function positiveInt(name: string, value: string | undefined, fallback: number): number {
  return integerOption(name, value, fallback, 1, 'a positive integer');
}

/** A non-negative integer command-line option, or the fallback when it was not given. */
export function nonNegativeInt(name: string, value: string | undefined, fallback: number): number {
  return integerOption(name, value, fallback, 0, 'a non-negative integer');
}

/** --gpu-layers: -1 (all), 0 (CPU only, the fallback) or a count. */
export function gpuLayersOption(value: string | undefined): number {
  return integerOption('gpu-layers', value, 0, -1, '-1 or a count');
}

/** The median of the values that are numbers; NaN when there are none. */
export function median(values: number[]): number {
  const s = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
