// `npm start` under real signals, on its embedded Postgres (DATABASE_URL unset): Ctrl-C as a
// terminal sends it (SIGINT to the whole foreground process group), and SIGTERM to npm alone
// (as a process manager sends it). Either way a booking in flight completes and is stored,
// "Stopped." is printed, and nothing keeps running: not npm, not node, not Postgres.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePort, startEmbeddedPostgres } from '../../scripts/embedded-postgres.js';
import { bookingRequest } from '../support/booking-request.js';
import { send, type TestResponse } from '../support/http.js';
import { waitFor } from '../support/processes.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const START_TIMEOUT_MS = 150_000;
const AUTH: [string, string] = ['authorization', 'Bearer demo-token-acme'];
const BOOKING = bookingRequest(42.5);

interface NpmStart {
  child: ChildProcess;
  /** Its process group: npm, sh and node (the terminal's foreground job). */
  pgid: number;
  url: string;
  output(): string;
  exited: Promise<number | null>;
}

/** `npm start` in a process group of its own, as a terminal runs a foreground job. */
async function npmStart(dataDir: string): Promise<NpmStart> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(await freePort()),
    HOST: '127.0.0.1',
    EXAMPLE_DATA_DIR: dataDir,
    NODE_OPTIONS: '',
  };
  delete env.DATABASE_URL;
  const child = spawn('npm', ['start'], {
    cwd: ROOT,
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  let gone = false;
  void exited.then(() => (gone = true));
  await waitFor(
    'the example to start',
    () => {
      if (gone) throw new Error(`npm start exited early:\n${output}`);
      return /Bookings API ready on/.test(output);
    },
    START_TIMEOUT_MS,
  );
  const url = /Bookings API ready on (http:\/\/[^\s;]+)/.exec(output)![1];
  return { child, pgid: child.pid!, url, output: () => output, exited };
}

/** Processes of the group that have not exited (zombies, exited but not reaped, aside). */
function livingInGroup(pgid: number): number[] {
  const living: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid pgrp ...; comm may hold spaces, so parse after its ')'.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') living.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return living;
}

function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The postmaster's pid and port, from its lock file. */
function postmaster(dataDir: string): { pid: number; port: number } {
  const lines = readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n');
  return { pid: Number(lines[0]), port: Number(lines[3]) };
}

const book = (url: string, key: string, delayMs = 0): Promise<TestResponse> =>
  send(url, '/x/partners/ACME01/instant_booking', {
    headers: [AUTH, ['x-idempotency-key', key], ['x-demo-delay-ms', String(delayMs)]],
    body: BOOKING,
  });

/** How long the booking in flight takes: long enough to be sure a signal lands during it. */
const IN_FLIGHT_MS = 5_000;

/**
 * Sends a slow booking and resolves once its key is claimed: the request is in flight, and
 * stays so for IN_FLIGHT_MS. `done` then resolves to the response and when it arrived (in an
 * object: an async function returning a promise would wait for it).
 */
async function bookingInFlight(
  app: NpmStart,
  dataDir: string,
  key: string,
): Promise<{ done: Promise<{ response: TestResponse; at: number }> }> {
  const client = new pg.Client(
    `postgres://postgres:postgres@127.0.0.1:${postmaster(dataDir).port}/postgres`,
  );
  await client.connect();
  try {
    const done = book(app.url, key, IN_FLIGHT_MS).then((response) => ({
      response,
      at: Date.now(),
    }));
    await waitFor(`booking ${key} in flight`, async () => {
      const { rows } = await client.query(
        'SELECT state FROM idempotency_records WHERE idempotency_key = $1',
        [key],
      );
      return rows[0]?.state === 'in_progress';
    });
    return { done };
  } finally {
    await client.end();
  }
}

/** Signals while a booking is in flight; the booking's response must come after it. */
async function signalDuringBooking(
  app: NpmStart,
  dataDir: string,
  key: string,
  signal: () => void,
): Promise<TestResponse> {
  const { done } = await bookingInFlight(app, dataDir, key);
  const signalledAt = Date.now();
  signal();
  const { response, at } = await done;
  // It was still running when the signal came, and was let finish.
  expect(at - signalledAt).toBeGreaterThan(IN_FLIGHT_MS / 2);
  return response;
}

/** Every process of the group and Postgres are gone, and the app said it stopped. */
async function expectEverythingStopped(app: NpmStart, postgresPid: number): Promise<void> {
  await app.exited;
  await waitFor('the group to exit', () => livingInGroup(app.pgid).length === 0, 30_000);
  await waitFor('Postgres to exit', () => !isRunning(postgresPid), 30_000);
  expect(app.output()).toContain('Stopped.');
  expect(app.output()).not.toContain('QueryRunnerAlreadyReleasedError');
}

const describeOnLinux = process.platform === 'linux' ? describe : describe.skip;

describeOnLinux('npm start under real signals', () => {
  const dataDir = join(tmpdir(), 'nest-idempotency-pg', `example-${randomUUID()}`, 'cluster');
  const started: NpmStart[] = [];
  const postgresPids: number[] = [];
  const firstKey = randomUUID();
  const secondKey = randomUUID();
  let firstBooking: TestResponse;
  let secondBooking: TestResponse;

  const start = async () => {
    const app = await npmStart(dataDir);
    started.push(app);
    postgresPids.push(postmaster(dataDir).pid);
    return app;
  };

  afterAll(async () => {
    for (const app of started) {
      for (const pid of livingInGroup(app.pgid)) process.kill(pid, 'SIGKILL');
    }
    for (const pid of postgresPids) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 200));
    if (existsSync(dataDir)) rmSync(join(dataDir, '..'), { recursive: true, force: true });
  });

  it(
    'Ctrl-C with a booking in flight: it completes, "Stopped." is printed, nothing keeps running',
    async () => {
      const app = await start();
      const postgresPid = postgresPids.at(-1)!;
      // Ctrl-C: the terminal signals every process of its foreground group.
      firstBooking = await signalDuringBooking(app, dataDir, firstKey, () =>
        process.kill(-app.pgid, 'SIGINT'),
      );
      expect(firstBooking.status).toBe(200);
      expect(firstBooking.json).toMatchObject({ partner_id: 'ACME01', status: 'CONFIRMED' });
      await expectEverythingStopped(app, postgresPid);
    },
    START_TIMEOUT_MS + 60_000,
  );

  it(
    'SIGTERM to npm with a booking in flight: the same; the first booking replays after a restart',
    async () => {
      const app = await start();
      const postgresPid = postgresPids.at(-1)!;
      const replay = await book(app.url, firstKey);
      expect(replay.status).toBe(409);
      expect(replay.body.equals(firstBooking.body)).toBe(true);

      secondBooking = await signalDuringBooking(
        app,
        dataDir,
        secondKey,
        () => process.kill(app.pgid, 'SIGTERM'), // npm only
      );
      expect(secondBooking.status).toBe(200);
      await expectEverythingStopped(app, postgresPid);
    },
    START_TIMEOUT_MS + 60_000,
  );

  it('both bookings were stored with their responses, and booked once each', async () => {
    // The cluster alone is enough to look: no third start of the app.
    const db = await startEmbeddedPostgres({ dataDir, persistent: true });
    const client = new pg.Client(db.url);
    try {
      await client.connect();
      const { rows } = await client.query(
        `SELECT idempotency_key, state, response_status, response_body
           FROM idempotency_records WHERE idempotency_key = ANY($1)`,
        [[firstKey, secondKey]],
      );
      const stored = new Map(rows.map((row) => [row.idempotency_key, row]));
      for (const [key, response] of [
        [firstKey, firstBooking],
        [secondKey, secondBooking],
      ] as const) {
        expect(stored.get(key)).toMatchObject({ state: 'completed', response_status: 200 });
        expect(stored.get(key).response_body.equals(response.body)).toBe(true);
      }
      const { rows: bookings } = await client.query(
        `SELECT count(*)::int AS total FROM bookings WHERE partner_id = 'ACME01'`,
      );
      expect(bookings[0].total).toBe(2);
    } finally {
      await client.end().catch(() => undefined);
      await db.stop();
    }
  }, 60_000);
});
