// `npm start`: the bookings example on DATABASE_URL, or on an embedded Postgres kept in
// .pgdata/ (so keys sent before a restart still replay after it). Ctrl-C stops it cleanly.
import { fileURLToPath } from 'node:url';
import { startDatabase } from '../scripts/embedded-postgres.js';
import { startBookingsApp, type RunningBookingsApp } from './bookings-app.js';

// A folder inside .pgdata/, not .pgdata/ itself: as root the helper opens the data folder's
// parent to the `postgres` user, and that parent should not be the repository root.
const DATA_DIR = fileURLToPath(new URL('../.pgdata/cluster', import.meta.url));

async function main(): Promise<void> {
  if (!process.env.DATABASE_URL) console.log(`Starting embedded Postgres in ${DATA_DIR} ...`);
  const db = await startDatabase({ dataDir: DATA_DIR, persistent: true });
  let app: RunningBookingsApp | undefined;

  // embedded-postgres installs its own SIGINT/SIGTERM hook that stops the cluster and exits
  // at once, racing the app's shutdown (requests in flight would lose their database). Take
  // those signals over: app first, then Postgres, then exit.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.removeAllListeners(signal);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: shutting down...`);
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
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));

  try {
    app = await startBookingsApp({
      databaseUrl: db.url,
      port: Number(process.env.PORT ?? 3000),
      host: process.env.HOST,
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

1) Book (201). Run it again: 409 with the same body and Idempotent-Replayed: true.
   Restart the app and run it again: still 409, the key is kept in Postgres.
${book('my-first-key', 42.5)}

2) Same key, different body (another price): 422 idempotency_key_reused.
${book('my-first-key', 99)}

3) Count ACME01's bookings: however often you ran 1), it booked once.
curl -s ${url}/x/partners/ACME01/bookings -H 'Authorization: Bearer demo-token-acme'

4) Every booking publishes booking.created; the confirmation sender consumes it once. Deliver
   the event again (demo only) with the id from 1): "deliveries" grows, "sent" stays 1.
curl -s -X POST ${url}/x/partners/ACME01/bookings/<id>/redeliver -H 'Authorization: Bearer demo-token-acme'

The full tour: npm run demo. Stop with Ctrl-C.`);
}

main().catch((error: unknown) => {
  console.error('The example could not start:', error);
  process.exit(1);
});
