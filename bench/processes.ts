// Starts and stops the benchmark's app processes and finds the database to run against.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, startDatabase, type RunningDatabase } from '../scripts/embedded-postgres.js';

export const ROOT = new URL('..', import.meta.url).pathname;
export const PEER_DIR = join(ROOT, 'bench', 'peer');
/** The machine's own Postgres, used when DATABASE_URL is unset and it answers. */
const MACHINE_POSTGRES = 'postgres://postgres@127.0.0.1:5432/test';

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

export interface AppProcess {
  name: string;
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

export interface AppLaunch {
  name: string;
  kind: 'module' | 'peer';
  env: Record<string, string>;
}

/** Starts bench/app.ts (kind module) or bench/peer/app.js (kind peer) on a free port. */
export async function startApp(launch: AppLaunch): Promise<AppProcess> {
  const port = await freePort();
  const [args, cwd] =
    launch.kind === 'module'
      ? [['--import', '@swc-node/register/esm-register', 'bench/app.ts'], ROOT]
      : [['app.js'], PEER_DIR];
  const child = spawn(process.execPath, args, {
    cwd,
    env: { ...process.env, ...launch.env, PORT: String(port), NODE_ENV: 'production' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise<void>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`${launch.name} did not start in 60 s`)), 60_000);
    child.once('exit', (code) =>
      fail(new Error(`${launch.name} exited with ${code} while starting`)),
    );
    child.on('message', (message: { ready?: boolean }) => {
      if (message?.ready) {
        clearTimeout(timer);
        done();
      }
    });
  });
  child.removeAllListeners('exit');
  return {
    name: launch.name,
    url: `http://127.0.0.1:${port}`,
    child,
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

/** Sends a command to the app and waits for the reply that carries `field`. */
export function ask(
  app: AppProcess,
  command: Record<string, unknown>,
  field: string,
): Promise<unknown> {
  return new Promise((done) => {
    const listener = (message: Record<string, unknown>) => {
      if (message && field in message) {
        app.child.off('message', listener);
        done(message[field]);
      }
    };
    app.child.on('message', listener);
    app.child.send(command);
  });
}
