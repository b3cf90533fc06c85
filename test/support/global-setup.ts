// Starts one real Postgres for the whole run (embedded unless DATABASE_URL is set) and
// hands its URL to the test workers through the environment. A database that cannot be
// reached stops the run at once, with one line that says why, rather than failing every
// test one connection timeout at a time.
import pg from 'pg';
import { startDatabase } from '../../scripts/embedded-postgres';

const CONNECT_TIMEOUT_MS = 5_000;

export default async function globalSetup(): Promise<void> {
  const db = await startDatabase();
  const shown = db.url.replace(/:[^:@/]+@/, ':***@');
  const problem = await checkConnection(db.url);
  if (problem) {
    await db.stop();
    process.stderr.write(
      `\n[tests] Cannot use Postgres at ${shown}: ${problem}. Fix DATABASE_URL, or unset it to run on an embedded Postgres.\n`,
    );
    process.exit(1);
  }
  process.env.DATABASE_URL = db.url;
  (globalThis as { __IDEMPOTENCY_DB__?: typeof db }).__IDEMPOTENCY_DB__ = db;
  console.log(`\n[tests] Postgres: ${shown}`);
}

/** Why the database cannot be used, or undefined when it can. */
async function checkConnection(url: string): Promise<string | undefined> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}
