// `npm run demo`: starts the bookings app in-process (on DATABASE_URL, or a throwaway
// embedded Postgres) and runs the walkthrough against it; with DEMO_URL set, runs it against
// an app that is already running instead. Exits non-zero when anything differs from the
// contract, so it doubles as a smoke test.
import { startDatabase } from '../scripts/embedded-postgres.js';
import { startBookingsApp } from './bookings-app.js';
import { runWalkthrough } from './demo/walkthrough.js';

async function main(): Promise<number> {
  if (process.env.DEMO_URL) {
    const result = await runWalkthrough({ baseUrl: process.env.DEMO_URL });
    return result.ok ? 0 : 1;
  }
  console.log(
    process.env.DATABASE_URL
      ? 'Using DATABASE_URL.'
      : 'DATABASE_URL is not set: starting a throwaway embedded Postgres (a few seconds)...',
  );
  // Not the .pgdata cluster of `npm start`: that one may be running right now.
  const db = await startDatabase();
  try {
    const app = await startBookingsApp({ databaseUrl: db.url, port: 0, logger: ['warn', 'error'] });
    try {
      console.log(`Bookings app listening on ${app.url}; booking events over ${app.events}`);
      const result = await runWalkthrough({ baseUrl: app.url });
      return result.ok ? 0 : 1;
    } finally {
      await app.close();
    }
  } finally {
    await db.stop();
  }
}

// process.exit rather than process.exitCode: embedded-postgres' exit hook calls
// process.exit(0) on `beforeExit`, which would turn a failed walkthrough into a success.
main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('The demo could not run:', error);
    process.exit(1);
  },
);
