// Fingerprint cost against JSON.parse of the same body, on small, typical and adversarial
// shapes (issue 10: a body's fingerprint must cost at most its parse, or a key is a DoS
// lever). Alone: `node --import @swc-node/register/esm-register bench/fingerprint.ts`.
// Knobs: FINGERPRINT_BENCH_RUNS (7 interleaved rounds), FINGERPRINT_BENCH_MS (40 per timing).
import { hash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { computeFingerprint } from '../src/index.js';
import type { BenchSection } from './section.js';

const RUNS = Number(process.env.FINGERPRINT_BENCH_RUNS ?? 7);
const TIMING_MS = Number(process.env.FINGERPRINT_BENCH_MS ?? 40);

interface Shape {
  name: string;
  why: string;
  text: string;
}

const nested = (open: string, inner: string, close: string, depth: number) =>
  open.repeat(depth) + inner + close.repeat(depth);

/** Repeats `make(i)` into a JSON array until it is about `bytes` long. */
function arrayOf(bytes: number, make: (i: number) => unknown): string {
  const items: string[] = [];
  let length = 2;
  for (let i = 0; length < bytes; i++) {
    const item = JSON.stringify(make(i));
    items.push(item);
    length += item.length + 1;
  }
  return `[${items.join(',')}]`;
}

function lineItem(i: number) {
  return {
    sku: `SKU-${i}`,
    name: `Item ${i}, "quoted", Zürich`,
    quantity: (i % 3) + 1,
    price: 19.99 + i,
    tags: ['gift', 'fragile'],
    meta: { color: 'red', size: i % 5 },
  };
}

export function shapes(): Shape[] {
  const limit = 100_000; // Express's default body limit, as in the issue
  const wide: Record<string, number> = {};
  for (let i = 0; i < 8_000; i++) wide[`k${(i * 7_919) % 8_000}`] = i;
  return [
    {
      name: 'small',
      why: 'a booking request',
      text: JSON.stringify({ product: 'travel', partnerId: 'p1', amount: 1234, currency: 'EUR' }),
    },
    {
      name: 'typical',
      why: 'an order: customer, 20 line items',
      text: JSON.stringify({
        customer: { id: 'c_123', email: 'a@example.com', address: { city: 'Zürich', zip: '8000' } },
        items: Array.from({ length: 20 }, (_, i) => lineItem(i)),
        note: 'Leave at the door',
        total: 1234.5,
      }),
    },
    {
      name: 'nested small arrays',
      why: 'the issue’s 10x case',
      text: arrayOf(limit, (i) => [i % 10, (i + 1) % 10]),
    },
    { name: 'deep arrays', why: '45,000 levels', text: nested('[', '', ']', 45_000) },
    { name: 'deep objects', why: '16,000 levels', text: nested('{"a":', '1', '}', 16_000) },
    { name: 'records', why: 'unsorted keys, one shape', text: arrayOf(limit, lineItem) },
    {
      name: 'distinct keys',
      why: 'an object per key',
      text: arrayOf(limit, (i) => ({ [`k${i}`]: 1 })),
    },
    { name: 'wide object', why: '8,000 keys, shuffled', text: JSON.stringify(wide) },
    { name: 'floats', why: 'random doubles', text: arrayOf(limit, (i) => Math.sin(i) * 1e6) },
    {
      name: 'escaped strings',
      why: 'escapes, non-ASCII',
      text: arrayOf(limit, (i) => `line\n"${i}"\t\u0001 é €`),
    },
    { name: 'long string', why: 'one 100 kB string', text: JSON.stringify('x'.repeat(limit)) },
    { name: 'empty arrays', why: '[] x 33,000', text: arrayOf(limit, () => []) },
    { name: 'empty objects', why: '{} x 33,000', text: arrayOf(limit, () => ({})) },
    { name: 'large', why: '5 MB of records (a raised limit)', text: arrayOf(5_000_000, lineItem) },
  ];
}

/** CPU nanoseconds per call, over enough calls to take about TIMING_MS. */
function cpuTime(run: () => unknown, calls: number): number {
  const start = process.cpuUsage();
  for (let i = 0; i < calls; i++) run();
  const used = process.cpuUsage(start);
  return ((used.user + used.system) * 1_000) / calls;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export interface FingerprintBenchRow {
  shape: string;
  why: string;
  bytes: number;
  parseNs: number;
  fingerprintNs: number;
  /** Median over rounds of fingerprint / parse, each round timing both back to back. */
  ratio: number;
  /** SHA-256 of the body's bytes alone: the floor any fingerprint pays. */
  sha256Ns: number;
}

export function measureShape(shape: Shape): FingerprintBenchRow {
  const bytes = Buffer.from(shape.text);
  const body = JSON.parse(shape.text);
  const parse = () => JSON.parse(shape.text);
  const fingerprint = () =>
    computeFingerprint({ method: 'POST', url: '/x/bench', body, contentType: 'application/json' });
  const sha256 = () => hash('sha256', bytes, 'buffer');
  let calls = 1;
  while (cpuTime(parse, calls) * calls < TIMING_MS * 1e6 && calls < 1 << 22) calls *= 2;
  const parses: number[] = [];
  const prints: number[] = [];
  const ratios: number[] = [];
  const hashes: number[] = [];
  for (let round = 0; round < RUNS; round++) {
    const p = cpuTime(parse, calls);
    const f = cpuTime(fingerprint, calls);
    parses.push(p);
    prints.push(f);
    ratios.push(f / p);
    hashes.push(cpuTime(sha256, calls));
  }
  return {
    shape: shape.name,
    why: shape.why,
    bytes: bytes.length,
    parseNs: median(parses),
    fingerprintNs: median(prints),
    ratio: median(ratios),
    sha256Ns: median(hashes),
  };
}

const format = (ns: number) =>
  ns >= 1e6
    ? `${(ns / 1e6).toFixed(2)} ms`
    : ns >= 1e3
      ? `${(ns / 1e3).toFixed(1)} µs`
      : `${ns.toFixed(0)} ns`;

export async function runFingerprintBench(): Promise<{
  markdown: string;
  rows: FingerprintBenchRow[];
}> {
  const rows = shapes().map(measureShape);
  const lines = [
    `### Fingerprint vs JSON.parse`,
    '',
    `CPU time per body (\`process.cpuUsage\`), median of ${RUNS} interleaved rounds; ratio =`,
    'fingerprint / JSON.parse, median of the per-round ratios (target: at most 1). The',
    'fingerprint is `computeFingerprint` on the parsed body (method, path, query, body, SHA-256);',
    '"SHA-256 alone" hashes the body bytes once: the floor every fingerprint pays.',
    '',
    '| shape | bytes | JSON.parse | fingerprint | ratio | SHA-256 alone |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows.map(
      (row) =>
        `| ${row.shape} (${row.why}) | ${row.bytes.toLocaleString('en-US')} | ${format(row.parseNs)} | ${format(row.fingerprintNs)} | ${row.ratio.toFixed(2)}x | ${format(row.sha256Ns)} |`,
    ),
  ];
  return { markdown: lines.join('\n'), rows };
}

/** The micro-benchmark as a section of `npm run bench` (issue 10, item 6). */
export const fingerprintSection: BenchSection = {
  id: 'fingerprint',
  title: 'Fingerprint cost',
  estimateSeconds: () => 20,
  run: async () => {
    const { markdown, rows } = await runFingerprintBench();
    return { markdown: markdown.replace(/^### .*\n\n/, ''), data: rows };
  },
};

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log((await runFingerprintBench()).markdown);
}
