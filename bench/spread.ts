// Median and min–max of a series (one value per round), and how the report prints them.
export interface Spread {
  median: number;
  min: number;
  max: number;
  count: number;
}

export function spread(values: number[]): Spread {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return { median: NaN, min: NaN, max: NaN, count: 0 };
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], count: sorted.length };
}

export function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

/** `1,234 [1,100–1,300]`; a single value prints alone. */
export function fmtSpread(s: Spread, digits = 0): string {
  if (s.count === 0) return 'n/a';
  if (s.count === 1 || s.min === s.max) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} [${fmt(s.min, digits)}–${fmt(s.max, digits)}]`;
}

/** `0.55x [0.48–0.61]` */
export function fmtRatio(s: Spread): string {
  if (s.count === 0) return 'n/a';
  const one = (value: number) => value.toFixed(2);
  if (s.count === 1 || s.min === s.max) return `${one(s.median)}x`;
  return `${one(s.median)}x [${one(s.min)}–${one(s.max)}]`;
}
