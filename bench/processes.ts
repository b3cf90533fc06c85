// Starts and stops the benchmark's app processes and finds the database to run against.
// Every app answers the same IPC commands: stats, stop (and the module app: profile-*).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, startDatabase, type RunningDatabase } from '../scripts/embedded-postgres.js';

export const ROOT = new URL('..', import.meta.url).pathname;
export const PEER_DIR = join(ROOT, 'bench', 'peer');
/** The machine's own Postgres, used when DATABASE_URL is unset and it answers. */
const MACHINE_POSTGRES = 'postgres://postgres@127.0.0.1:5432/test';
const SWC = ['--import', '@swc-node/register/esm-register'];

export interface BenchDatabase extends RunningDatabase {
  source: string;
}

export async function resolveDatabase(): Promise<BenchDatabase> {
  if (process.env.DATABASE_URL) {
    return { ...(await startDatabase()), source: 'DATABASE_URL' };
  }
  const client = new pg.Client({
    connectionString: MACHINE_POSTGRES,
    connectionTimeoutMillis: 2000,
  });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { url: MACHINE_POSTGRES, stop: async () => undefined, source: 'machine Postgres' };
  } catch {
    return { ...(await startDatabase()), source: 'embedded Postgres' };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Installs the peer's own NestJS 10 tree on a fresh clone. */
export async function ensurePeerInstalled(): Promise<void> {
  if (existsSync(join(PEER_DIR, 'node_modules', '@node-idempotency', 'nestjs'))) return;
  const command = existsSync(join(PEER_DIR, 'package-lock.json')) ? 'ci' : 'install';
  console.log(`[bench] npm ${command} in bench/peer (NestJS 10 + @node-idempotency/nestjs)`);
  await runToEnd('npm', [command, '--no-audit', '--no-fund'], PEER_DIR);
}

function runToEnd(command: string, args: string[], cwd: string): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd, stdio: 'inherit' });
    child.once('error', fail);
    child.once('exit', (code) =>
      code === 0 ? done() : fail(new Error(`${command} ${args.join(' ')} exited with ${code}`)),
    );
  });
}

/** What an app reports about itself: handler runs, SQL statements sent, its CPU. */
export interface AppStats {
  runs: { plain: number; orders: number };
  queries: number;
  /** Handler runs per worker, for a cluster. */
  workers?: { pid: number; runs: { plain: number; orders: number } }[];
}

export interface AppProcess {
  name: string;
  url: string;
  child: ChildProcess;
  /** Every process of the app (a cluster's primary and its workers). */
  pids: number[];
  stats(): Promise<AppStats>;
  stop(): Promise<void>;
}

export type AppLaunch =
  /**
   * bench/app.ts: the module with its Postgres store, or the in-memory limit store; `root`
   * runs it from another checkout of this repository (a baseline).
   */
  | { name: string; kind: 'module'; env: Record<string, string>; root?: string }
  /** bench/peer/app.js: @node-idempotency/nestjs. */
  | { name: string; kind: 'peer'; env: Record<string, string> }
  /** bench/cluster.ts: `workers` copies of bench/app.ts behind Node's cluster module. */
  | { name: string; kind: 'cluster'; workers: number; env: Record<string, string> };

export async function startApp(launch: AppLaunch): Promise<AppProcess> {
  const port = await freePort();
  const [args, cwd, extra] =
    launch.kind === 'module'
      ? [[...SWC, 'bench/app.ts'], launch.root ?? ROOT, {}]
      : launch.kind === 'cluster'
        ? [[...SWC, 'bench/cluster.ts'], ROOT, { WORKERS: String(launch.workers) }]
        : [['app.js'], PEER_DIR, {}];
  const child = spawn(process.execPath, args, {
    cwd,
    env: { ...process.env, ...launch.env, ...extra, PORT: String(port), NODE_ENV: 'production' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await new Promise<{ pids?: number[] }>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`${launch.name} did not start in 90 s`)), 90_000);
    child.once('exit', (code) =>
      fail(new Error(`${launch.name} exited with ${code} while starting`)),
    );
    child.on('message', (message: { ready?: boolean; pids?: number[] }) => {
      if (message?.ready) {
        clearTimeout(timer);
        done(message);
      }
    });
  });
  child.removeAllListeners('exit');
  return {
    name: launch.name,
    url: `http://127.0.0.1:${port}`,
    child,
    pids: [child.pid!, ...(ready.pids ?? [])],
    stats: () => ask(child, { command: 'stats' }, 'stats') as Promise<AppStats>,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null) return done();
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        child.once('exit', () => {
          clearTimeout(timer);
          done();
        });
        child.send({ command: 'stop' });
      }),
  };
}

/** Starts apps one after the other (parallel start-ups would only fight for the 2 cores). */
export async function startApps(launches: AppLaunch[]): Promise<AppProcess[]> {
  const apps: AppProcess[] = [];
  try {
    for (const launch of launches) apps.push(await startApp(launch));
    return apps;
  } catch (error) {
    await stopApps(apps);
    throw error;
  }
}

export async function stopApps(apps: AppProcess[]): Promise<void> {
  await Promise.all(apps.map((app) => app.stop()));
}

/** Sends a command to a process and waits for the reply that carries `field`. */
export function ask(
  child: ChildProcess,
  command: Record<string, unknown>,
  field: string,
): Promise<unknown> {
  return new Promise((done) => {
    const listener = (message: Record<string, unknown>) => {
      if (message && field in message) {
        child.off('message', listener);
        done(message[field]);
      }
    };
    child.on('message', listener);
    child.send(command);
  });
}
