// Starts one real Postgres for the whole run (embedded unless DATABASE_URL is set) and
// hands its URL to the test workers through the environment.
import { startDatabase } from '../../scripts/embedded-postgres';

export default async function globalSetup(): Promise<void> {
  const db = await startDatabase();
  process.env.DATABASE_URL = db.url;
  (globalThis as { __IDEMPOTENCY_DB__?: typeof db }).__IDEMPOTENCY_DB__ = db;
  console.log(`\n[tests] Postgres: ${db.url.replace(/:[^:@/]+@/, ':***@')}`);
}
