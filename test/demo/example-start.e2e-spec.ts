// The example follows the README's own advice: it starts without a single warning (its
// DataSource sets connectTimeoutMS, which the module warns about when missing).
import type { LoggerService } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { startBookingsApp } from '../../example/bookings-app.js';
import { dropSchema } from '../support/test-app.js';

/** Keeps what Nest and the module log, by level. */
class RecordingLogger implements LoggerService {
  readonly lines: Array<{ level: string; message: string }> = [];
  log = (message: unknown) => this.record('log', message);
  warn = (message: unknown) => this.record('warn', message);
  error = (message: unknown) => this.record('error', message);
  private record(level: string, message: unknown): void {
    this.lines.push({ level, message: String(message) });
  }
}

describe('the example app', () => {
  it('starts without a warning or an error', async () => {
    const schema = `example_start_${randomBytes(4).toString('hex')}`;
    const logger = new RecordingLogger();
    const app = await startBookingsApp({
      databaseUrl: process.env.DATABASE_URL!,
      port: 0,
      schema,
      logger,
    });
    try {
      expect(logger.lines.filter((line) => line.level !== 'log')).toEqual([]);
      expect(logger.lines.some((line) => /successfully started/.test(line.message))).toBe(true);
    } finally {
      try {
        await app.close();
      } finally {
        await dropSchema(schema);
      }
    }
  });
});
