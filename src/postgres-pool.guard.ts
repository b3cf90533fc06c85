// Keeps the connection errors of a pg Pool from taking the process down.
//
// pg-pool listens for errors on a client only while the client sits idle: it removes its
// listener when it hands the client out, and whoever checked the client out must listen. A
// TypeORM query runner attaches its listener one promise tick after it gets the client. When
// the client was released inside a socket read (pool.query releases in its query's callback,
// which runs while a read is being parsed), it is handed to a waiting runner at once, and if
// that same read also carries a FATAL message (a backend terminated by pg_terminate_backend,
// or a server shutting down), the client emits 'error' before any listener exists: Node
// throws it as an unhandled 'error' event and the process dies. A listener that stays on the
// client for its whole life closes that window for every user of the pool. It hides nothing:
// the statement running on the client fails with the same error, and a client that saw an
// error is not queryable, so the pool drops it on release.
import type { DataSource } from 'typeorm';

/** The parts of a pg Pool used here (pg's own types are a dev dependency only). */
export interface PgPoolLike {
  on(event: 'acquire', listener: (client: PgClientEvents) => void): unknown;
}

interface PgClientEvents {
  on(event: 'error', listener: (error: Error) => void): unknown;
}

const guardedPools = new WeakSet<object>();
const guardedClients = new WeakSet<object>();

/** Error events of a client already reported through its failing statement. */
const absorb = (): void => undefined;

/**
 * Gives every client of `pool` a permanent 'error' listener, from its next checkout on (the
 * 'acquire' event fires before pg-pool drops its idle listener). Idempotent.
 */
export function guardPoolClients(pool: PgPoolLike): void {
  if (guardedPools.has(pool)) return;
  guardedPools.add(pool);
  pool.on('acquire', (client) => {
    if (guardedClients.has(client)) return;
    guardedClients.add(client);
    client.on('error', absorb);
  });
}

/** The pg Pool behind an initialized TypeORM Postgres DataSource, guarded. */
export function guardedPoolOf<Pool extends PgPoolLike>(dataSource: DataSource): Pool {
  const pool = (dataSource.driver as { master?: Pool }).master;
  if (!pool) throw new Error('The DataSource is not initialized.');
  guardPoolClients(pool);
  return pool;
}
