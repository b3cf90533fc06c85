// The HTTP load: scenarios, targets, and one measured run of a scenario against a target,
// driven by autocannon's programmatic API. Each response is classified by outcome (ran /
// replayed / in flight / other), not by status code, because the peer replays with the
// original status and answers 409 for a request in flight where this module says 423.
import autocannon from 'autocannon';
import { cpuBetween, type CpuMeter, type CpuSplit } from './cpu.js';
import type { AppProcess, AppStats } from './processes.js';

export type Outcome = 'ran' | 'replayed' | 'inFlight' | 'other';
export type ScenarioId = 'new' | 'replay' | 'storm';

export interface Target {
  /** Stable id the report and the ratios refer to (`plain`, `module`, `limit`, `peerPostgres`...). */
  id: string;
  label: string;
  /** Which response shapes to expect. */
  kind: 'module' | 'peer';
  app: AppProcess;
  /** `/plain` is the handler without idempotency: every request just runs. */
  path: '/orders' | '/plain';
  /** application_name of the app's Postgres connections, to find their backends. */
  dbApplicationName?: string;
}

export interface Scenario {
  id: ScenarioId;
  title: string;
  connections: number;
  body: string;
  /** Outcomes that count as success on `/orders`; anything else is an error. */
  expected: Outcome[];
  /** The idempotency key of the n-th request of one measured run. */
  key(n: number, tag: string): string;
}

export const BODY = JSON.stringify({ sku: 'bench-sku', qty: 2 });
export const REPLAY_KEYS = 500;
export const STORM = { hotKeys: 4, requestsPerWave: 200, delayMs: 5 };

export function newKeys(connections: number): Scenario {
  return {
    id: 'new',
    title: 'New keys (every request unique)',
    connections,
    body: BODY,
    expected: ['ran'],
    key: (n, tag) => `new-${tag}-${n}`,
  };
}

/** Replays of `keys` (completed beforehand), round-robin; by default the prepared ones. */
export function replays(connections: number, keys?: string[]): Scenario {
  if (keys?.length === 0) throw new Error('Nothing to replay: no key ran the handler');
  return {
    id: 'replay',
    title: 'Replays of completed keys',
    connections,
    body: BODY,
    expected: ['replayed'],
    key: keys ? (n) => keys[n % keys.length] : (n) => replayKey(n % REPLAY_KEYS),
  };
}

export function storm(connections: number): Scenario {
  return {
    id: 'storm',
    title: `Duplicate storm (${STORM.hotKeys} hot keys per wave of ${STORM.requestsPerWave} requests, handler sleeps ${STORM.delayMs} ms)`,
    connections,
    body: JSON.stringify({ sku: 'bench-sku', qty: 2, delayMs: STORM.delayMs }),
    expected: ['ran', 'replayed', 'inFlight'],
    key: (n, tag) => `storm-${tag}-${Math.floor(n / STORM.requestsPerWave)}-${n % STORM.hotKeys}`,
  };
}

export function replayKey(i: number): string {
  return `replay-${i}`;
}

export function classify(
  kind: Target['kind'],
  status: number,
  headers: Record<string, string | string[]>,
): Outcome {
  let replayed = false;
  for (const name of Object.keys(headers)) {
    if (name.toLowerCase() === 'idempotent-replayed') replayed = String(headers[name]) === 'true';
  }
  if (status === 201 && !replayed) return 'ran';
  if (kind === 'module') {
    if (status === 409 && replayed) return 'replayed';
    if (status === 423) return 'inFlight';
  } else {
    if (status >= 200 && status < 300 && replayed) return 'replayed';
    if (status === 409) return 'inFlight';
  }
  return 'other';
}

export interface RunResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  /** Requests sent, those still in flight when the load stopped included (all answered by the time stats are read). */
  sent: number;
  errors: number;
  outcomes: Record<Outcome, number>;
  /** Handler invocations counted by the app (all workers). */
  handlerRuns: number;
  /** Handler invocations per worker, for a cluster. */
  workerRuns?: number[];
  /** Distinct keys sent (storm only). */
  distinctKeys: number;
  /** SQL statements the app sent (pg Client#query calls). */
  queries: number;
  cpu: CpuSplit;
  /** Keys whose request ran the handler, when asked for (to replay them next). */
  ranKeys?: string[];
}

export interface MeasureOptions {
  tag: string;
  seconds: number;
  cpu: CpuMeter;
  collectRanKeys?: boolean;
}

export async function measure(
  target: Target,
  scenario: Scenario,
  options: MeasureOptions,
): Promise<RunResult> {
  const plain = target.path === '/plain';
  const expected: Outcome[] = plain ? ['ran'] : scenario.expected;
  const outcomes: Record<Outcome, number> = { ran: 0, replayed: 0, inFlight: 0, other: 0 };
  const keys = new Set<string>();
  const ranKeys: string[] = [];
  let n = 0;
  // Targets may share a table (the scale-out apps do): their keys must not meet.
  const tag = `${options.tag}-${target.id}`;
  const before = await target.app.stats();
  const cpuBefore = await options.cpu.sample(target.app.pids, target.dbApplicationName);
  const result = await autocannon({
    url: target.app.url,
    connections: scenario.connections,
    pipelining: 1,
    duration: options.seconds,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        path: target.path,
        headers: { 'content-type': 'application/json' },
        body: scenario.body,
        setupRequest: (request, context) => {
          const key = scenario.key(n++, tag);
          if (scenario.id === 'storm') keys.add(key);
          context.key = key;
          request.headers = { ...request.headers, 'x-idempotency-key': key };
          return request;
        },
        onResponse: (status, _body, context, headers) => {
          const outcome = classify(target.kind, status, headers);
          outcomes[outcome]++;
          if (options.collectRanKeys && outcome === 'ran') ranKeys.push(context.key as string);
        },
      },
    ],
  });
  // The CPU window closes with the load; the few requests still in flight (one per connection
  // at most) finish after it, before the handler runs are counted.
  const cpuAfter = await options.cpu.sample(target.app.pids, target.dbApplicationName);
  const after = await settled(target);
  const route = plain ? 'plain' : 'orders';
  const unexpected = (Object.keys(outcomes) as Outcome[])
    .filter((outcome) => !expected.includes(outcome))
    .reduce((sum, outcome) => sum + outcomes[outcome], 0);
  return {
    rps: result.requests.total / Math.max(0.01, result.duration),
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests: result.requests.total,
    sent: n,
    errors: result.errors + result.timeouts + unexpected,
    outcomes,
    handlerRuns: after.runs[route] - before.runs[route],
    workerRuns: workerRuns(before, after, route),
    distinctKeys: keys.size,
    queries: after.queries - before.queries,
    cpu: cpuBetween(cpuBefore, cpuAfter),
    ranKeys: options.collectRanKeys ? ranKeys : undefined,
  };
}

/** The app's stats once its handler runs and statements stop changing (at most ~3 s). */
async function settled(target: Target): Promise<AppStats> {
  let last = await target.app.stats();
  for (let i = 0; i < 60; i++) {
    await new Promise((done) => setTimeout(done, 50));
    const now = await target.app.stats();
    if (
      now.runs.orders === last.runs.orders &&
      now.runs.plain === last.runs.plain &&
      now.queries === last.queries
    ) {
      return now;
    }
    last = now;
  }
  return last;
}

function workerRuns(before: AppStats, after: AppStats, route: 'plain' | 'orders') {
  if (!before.workers || !after.workers) return undefined;
  return after.workers.map((worker, i) => worker.runs[route] - before.workers![i].runs[route]);
}

/** Completes REPLAY_KEYS keys on a target so the replay scenario has something to replay. */
export async function prepareReplays(target: Target): Promise<void> {
  await sendKeys(
    target,
    Array.from({ length: REPLAY_KEYS }, (_, i) => replayKey(i)),
  );
}

/**
 * Sends `count` new keys and waits for every answer: a freshly started app compiles its code
 * and opens its pool on its first requests, which can take longer than a short timed run.
 */
export async function prime(target: Target, count = 300): Promise<void> {
  const tag = `prime-${Date.now().toString(36)}-${target.id}`;
  await sendKeys(
    target,
    Array.from({ length: count }, (_, i) => `${tag}-${i}`),
  );
}

async function sendKeys(target: Target, keys: string[], concurrency = 20): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const key = keys[next++];
      const response = await post(target, key, BODY);
      const outcome = classify(target.kind, response.status, response.headers);
      if (outcome !== 'ran' && outcome !== 'replayed') {
        throw new Error(`${target.label}: key ${key} answered ${response.status}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

export async function post(
  target: Target,
  key: string,
  body: string,
): Promise<{ status: number; headers: Record<string, string> }> {
  const response = await fetch(`${target.app.url}${target.path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-idempotency-key': key },
    body,
  });
  await response.arrayBuffer();
  return { status: response.status, headers: Object.fromEntries(response.headers) };
}
