// Command-line option parsing shared by the benchmarks.

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
