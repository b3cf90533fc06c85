// The HTTP scenarios, driven by autocannon's programmatic API. Each response is classified by
// outcome (ran / replayed / in flight / other), not by status code, because the peer replays
// with the original status and answers 409 for a request in flight where this module says 423.
import autocannon from 'autocannon';
import { cpuBetween, type BackendCpuProbe } from './cpu.js';

export type Outcome = 'ran' | 'replayed' | 'inFlight' | 'other';
export type ScenarioId = 'plain' | 'new' | 'replay' | 'storm';

export interface Target {
  id: string;
  label: string;
  kind: 'module' | 'peer';
  url: string;
  /** application_name of the app's Postgres connections, to find their backends. */
  dbApplicationName?: string;
}

export interface Scenario {
  id: ScenarioId;
  title: string;
  path: '/plain' | '/orders';
  connections: number;
  body: string;
  /** Outcomes that count as success in this scenario; anything else is an error. */
  expected: Outcome[];
  /** The idempotency key of the n-th request of one measured run. */
  key(n: number, tag: string): string;
}

export const BODY = JSON.stringify({ sku: 'bench-sku', qty: 2 });
export const REPLAY_KEYS = 500;
export const STORM = { hotKeys: 4, requestsPerWave: 200, delayMs: 5, connections: 50 };

export function scenarios(connections: number): Record<ScenarioId, Scenario> {
  return {
    plain: {
      id: 'plain',
      title: 'Plain route, no idempotency',
      path: '/plain',
      connections,
      body: BODY,
      expected: ['ran'],
      key: (n, tag) => `plain-${tag}-${n}`,
    },
    new: {
      id: 'new',
      title: 'New keys (every request unique)',
      path: '/orders',
      connections,
      body: BODY,
      expected: ['ran'],
      key: (n, tag) => `new-${tag}-${n}`,
    },
    replay: {
      id: 'replay',
      title: 'Replays of completed keys',
      path: '/orders',
      connections,
      body: BODY,
      expected: ['replayed'],
      key: (n) => replayKey(n % REPLAY_KEYS),
    },
    storm: {
      id: 'storm',
      title: `Duplicate storm (${STORM.connections} connections, ${STORM.hotKeys} hot keys per wave of ${STORM.requestsPerWave} requests, handler ${STORM.delayMs} ms)`,
      path: '/orders',
      connections: STORM.connections,
      body: JSON.stringify({ sku: 'bench-sku', qty: 2, delayMs: STORM.delayMs }),
      expected: ['ran', 'replayed', 'inFlight'],
      key: (n, tag) => `storm-${tag}-${Math.floor(n / STORM.requestsPerWave)}-${n % STORM.hotKeys}`,
    },
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

export interface AppStats {
  runs: { plain: number; orders: number };
  queries: number;
  /** process.cpuUsage() user + system, microseconds. */
  cpuMicros: number;
}

export async function appStats(target: Target): Promise<AppStats> {
  const response = await fetch(`${target.url}/__stats`);
  return (await response.json()) as AppStats;
}

export interface RunResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  outcomes: Record<Outcome, number>;
  handlerRuns: number;
  distinctKeys: number;
  queries: number;
  /** App process CPU ms per answered request. */
  appCpuMs: number;
  /** CPU ms per answered request of the Postgres backends serving the app's pool. */
  dbCpuMs?: number;
}

export async function measure(
  target: Target,
  scenario: Scenario,
  durationSeconds: number,
  tag: string,
  probe?: BackendCpuProbe,
): Promise<RunResult> {
  const dbName = target.dbApplicationName;
  const dbBefore = probe && dbName ? await probe.sample(dbName) : undefined;
  const before = await appStats(target);
  const outcomes: Record<Outcome, number> = { ran: 0, replayed: 0, inFlight: 0, other: 0 };
  const keys = new Set<string>();
  let n = 0;
  const result = await autocannon({
    url: target.url,
    connections: scenario.connections,
    pipelining: 1,
    duration: durationSeconds,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        path: scenario.path,
        headers: { 'content-type': 'application/json' },
        body: scenario.body,
        setupRequest: (request) => {
          const key = scenario.key(n++, tag);
          if (scenario.id === 'storm') keys.add(key);
          request.headers = { ...request.headers, 'x-idempotency-key': key };
          return request;
        },
        onResponse: (status, _body, _context, headers) => {
          outcomes[classify(target.kind, status, headers)]++;
        },
      },
    ],
  });
  // Let requests that were in flight when autocannon stopped finish on the server.
  await new Promise((done) => setTimeout(done, 300));
  const after = await appStats(target);
  const dbAfter = probe && dbName && dbBefore ? await probe.sample(dbName) : undefined;
  const answered = Math.max(1, result.requests.total);
  const route = scenario.path === '/plain' ? 'plain' : 'orders';
  const unexpected = (Object.keys(outcomes) as Outcome[])
    .filter((outcome) => !scenario.expected.includes(outcome))
    .reduce((sum, outcome) => sum + outcomes[outcome], 0);
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests: result.requests.total,
    errors: result.errors + result.timeouts + unexpected,
    outcomes,
    handlerRuns: after.runs[route] - before.runs[route],
    distinctKeys: keys.size,
    queries: after.queries - before.queries,
    appCpuMs: (after.cpuMicros - before.cpuMicros) / 1000 / answered,
    dbCpuMs: dbBefore && dbAfter ? cpuBetween(dbBefore, dbAfter) / answered : undefined,
  };
}

/** Completes REPLAY_KEYS keys on a target so the replay scenario has something to replay. */
export async function prepareReplays(target: Target, concurrency = 20): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < REPLAY_KEYS) {
      const key = replayKey(next++);
      const response = await post(target, '/orders', key, BODY);
      const outcome = classify(target.kind, response.status, response.headers);
      if (outcome !== 'ran' && outcome !== 'replayed') {
        throw new Error(`${target.label}: preparing replay key ${key} answered ${response.status}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

export async function post(
  target: Target,
  path: string,
  key: string,
  body: string,
): Promise<{ status: number; headers: Record<string, string> }> {
  const response = await fetch(`${target.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-idempotency-key': key },
    body,
  });
  await response.arrayBuffer();
  return { status: response.status, headers: Object.fromEntries(response.headers) };
}

/**
 * SQL round trips per request, counted by the app's wrapper around pg's Client#query while
 * requests run one at a time: a new key, a replay, and a duplicate of a request still in flight.
 */
export async function countRoundTrips(target: Target, samples = 20) {
  const tag = `rt-${Date.now()}`;
  const perRequest = async (send: () => Promise<unknown>, count: number) => {
    const before = (await appStats(target)).queries;
    for (let i = 0; i < count; i++) await send();
    return ((await appStats(target)).queries - before) / count;
  };
  let i = 0;
  const newKey = await perRequest(() => post(target, '/orders', `${tag}-${i++}`, BODY), samples);
  let j = 0;
  const replay = await perRequest(() => post(target, '/orders', `${tag}-${j++}`, BODY), samples);

  // Hold some keys in flight (handler sleeps 1.5 s), then send their duplicates one by one.
  const held = 10;
  const slow = JSON.stringify({ sku: 'bench-sku', qty: 2, delayMs: 1500 });
  const holds = Array.from({ length: held }, (_, k) =>
    post(target, '/orders', `${tag}-hold-${k}`, slow),
  );
  await new Promise((done) => setTimeout(done, 300));
  let k = 0;
  const statuses: number[] = [];
  const inFlight = await perRequest(async () => {
    const response = await post(target, '/orders', `${tag}-hold-${k++}`, slow);
    statuses.push(response.status);
  }, held);
  await Promise.all(holds);
  return { newKey, replay, inFlight, inFlightStatuses: [...new Set(statuses)] };
}
