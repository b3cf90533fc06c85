// Child-process entry for the crash tests: starts the transactional app and reports
// `READY <port>` and `INSERTED` on stdout.
import 'reflect-metadata';
import { startTransactionalApp } from './transactional-app.js';

const { app, url } = await startTransactionalApp({
  adapter: (process.env.ADAPTER as 'express' | 'fastify') ?? 'express',
  tableName: process.env.TABLE_NAME!,
  bookingsTable: process.env.BOOKINGS_TABLE!,
  leaseMs: Number(process.env.LEASE_MS ?? 60_000),
  onInserted: () => process.stdout.write('INSERTED\n'),
});
process.stdout.write(`READY ${new URL(url).port}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
