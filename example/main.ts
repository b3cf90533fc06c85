// `npm start`: the bookings example on DATABASE_URL, or on an embedded Postgres kept in
// .pgdata/ (so keys sent before a restart still replay after it). Ctrl-C, or SIGTERM to npm
// or to this process, stops it cleanly: requests in flight finish and are stored, then the
// app closes, then Postgres.
// ADAPTER=fastify runs it on Fastify instead of Express.
import { fileURLToPath } from 'node:url';
import { startDatabase } from '../scripts/embedded-postgres.js';
import { startBookingsApp, type RunningBookingsApp } from './bookings-app.js';

// A folder inside .pgdata/, not .pgdata/ itself: as root the helper opens the data folder's
// parent to the `postgres` user, and that parent should not be the repository root.
// EXAMPLE_DATA_DIR moves it (the tests run the example on a cluster of their own).
const DATA_DIR =
  process.env.EXAMPLE_DATA_DIR ?? fileURLToPath(new URL('../.pgdata/cluster', import.meta.url));
/** How often to check whether npm (or whoever started this process) is still there. */
const PARENT_CHECK_MS = 500;

async function main(): Promise<void> {
  if (!process.env.DATABASE_URL) console.log(`Starting embedded Postgres in ${DATA_DIR} ...`);
  // Its own process group: the terminal's Ctrl-C reaches this process only, which stops the
  // app (letting requests in flight finish) before it stops Postgres.
  const db = await startDatabase({ dataDir: DATA_DIR, persistent: true, ownProcessGroup: true });
  let app: RunningBookingsApp | undefined;

  // embedded-postgres installs its own SIGINT/SIGTERM hook that stops the cluster and exits
  // at once, racing the app's shutdown. Take those signals over: app first, then Postgres.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeAllListeners(signal);
  let stopping = false;
  const stop = async (reason: string) => {
    if (stopping) {
      // A second Ctrl-C does not wait any longer (Postgres is stopped on the way out).
      if (reason.startsWith('SIG')) process.exit(1);
      return;
    }
    stopping = true;
    console.log(`\n${reason}: shutting down...`);
    let code = 0;
    try {
      await app?.close();
      await db.stop();
      console.log('Stopped.');
    } catch (error) {
      console.error('Shutdown did not finish cleanly:', error);
      code = 1;
    }
    process.exit(code);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => void stop(signal));
  }
  // npm runs this through `sh -c`, which does not pass a SIGTERM sent to npm on: sh dies and
  // this process would be left running, reparented. A new parent means that happened.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void stop('The process that started this one has exited');
  }, PARENT_CHECK_MS).unref();

  try {
    app = await startBookingsApp({
      databaseUrl: db.url,
      port: Number(process.env.PORT ?? 3000),
      host: process.env.HOST,
      adapter: process.env.ADAPTER === 'fastify' ? 'fastify' : 'express',
    });
  } catch (error) {
    await db.stop();
    throw error;
  }
  printWelcome(app.url, app.events);
}

function printWelcome(url: string, events: string): void {
  const book = (key: string, price: number) =>
    `curl -i -X POST ${url}/x/partners/ACME01/instant_booking \\
  -H 'Authorization: Bearer demo-token-acme' -H 'Content-Type: application/json' \\
  -H 'x-idempotency-key: ${key}' \\
  -d '{"currency":"EUR","policyholder":{"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com","country":"GB"},"quotes":[{"policy_type":"travel","policy_start_date":"2027-01-15","price":${price}}]}'`;
  console.log(`
Bookings API ready on ${url}; booking events over ${events}

1) Book (200). Run it again: 409 with the same body and Idempotent-Replayed: true.
   Restart the app and run it again: still 409, the key is kept in Postgres.
${book('my-first-key', 42.5)}

2) Same key, different body (another price): 422 idempotency_key_reused.
${book('my-first-key', 99)}

3) Count ACME01's bookings: however often you ran 1), it booked once.
curl -s ${url}/x/partners/ACME01/bookings -H 'Authorization: Bearer demo-token-acme'

4) Every booking publishes booking.created; the confirmation sender consumes it once. Deliver
   the event again (demo only) with the id from 1): "deliveries" grows, "sent" stays 1.
curl -s -X POST ${url}/x/partners/ACME01/bookings/<id>/redeliver -H 'Authorization: Bearer demo-token-acme'

The API's OpenAPI document: ${url}/docs (Swagger UI), ${url}/docs-json.
The full tour: npm run demo. Stop with Ctrl-C.`);
}

main().catch((error: unknown) => {
  console.error('The example could not start:', error);
  process.exit(1);
});
