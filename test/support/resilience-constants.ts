// Route leases of test/support/resilience-server.ts, shared with the tests that time them.
export const LEASE_MS = {
  /** Storms: far longer than any handler run, so nothing is ever taken over. */
  work: 20_000,
  /** kill -9: long enough to observe a 423, short enough to wait out. */
  mid: 2_000,
  /** Late finisher: shorter than the handler, on purpose. */
  short: 1_000,
} as const;
