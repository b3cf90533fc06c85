// Child-process entry for the crash tests: starts the transactional app and reports
// `READY <port>` and `INSERTED` on stdout.
// Optional env: APPLICATION_NAME (so a test can find this process's backends), POOL_SIZE,
// EXIT_WITH_STDIN=1 (exit when the parent's pipe closes, as startAppProcess expects).
import 'reflect-metadata';
import { startTransactionalApp } from './transactional-app.js';

if (process.env.EXIT_WITH_STDIN === '1') {
  process.stdin.on('end', () => process.exit(1));
  process.stdin.on('error', () => process.exit(1));
  process.stdin.resume();
}

const { app, url } = await startTransactionalApp({
  adapter: (process.env.ADAPTER as 'express' | 'fastify') ?? 'express',
  tableName: process.env.TABLE_NAME!,
  bookingsTable: process.env.BOOKINGS_TABLE!,
  leaseMs: Number(process.env.LEASE_MS ?? 60_000),
  connection: {
    type: 'postgres',
    url: process.env.DATABASE_URL,
    applicationName: process.env.APPLICATION_NAME,
    poolSize: process.env.POOL_SIZE ? Number(process.env.POOL_SIZE) : undefined,
  },
  onInserted: () => process.stdout.write('INSERTED\n'),
});
process.stdout.write(`READY ${new URL(url).port}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
