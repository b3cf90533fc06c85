// One TypeORM DataSource for everything the example stores: its bookings, the confirmations
// sent for them and, through
// IdempotencyModule.forRoot({ dataSource }), the idempotency records.
import { DataSource } from 'typeorm';
import {
  AddIdempotencyWaiters1795910400000,
  CreateIdempotencyRecords1764403200000,
} from '../../src/index.js';
import { Booking } from '../bookings/booking.entity.js';
import { CreateBookings1764403300000 } from './1764403300000-CreateBookings.js';
import { CreateConfirmations1764403400000 } from './1764403400000-CreateConfirmations.js';

export interface BookingsDataSourceOptions {
  /** Postgres URL. */
  url: string;
  /**
   * Postgres schema for every table (bookings, idempotency records, migrations), created if
   * missing. The tests use a throwaway one so parallel test files never share tables.
   * @default the connection's default search_path (normally `public`)
   */
  schema?: string;
}

/** Opens the DataSource and brings both tables up to date. */
export async function openBookingsDataSource(
  options: BookingsDataSourceOptions,
): Promise<DataSource> {
  const { schema } = options;
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new Error(`Invalid schema name "${schema}".`);
  }
  const dataSource = new DataSource({
    type: 'postgres',
    url: options.url,
    entities: [Booking],
    migrations: [
      CreateIdempotencyRecords1764403200000,
      CreateBookings1764403300000,
      CreateConfirmations1764403400000,
      AddIdempotencyWaiters1795910400000,
    ],
    // search_path rather than TypeORM's `schema` option: the idempotency store's plain SQL
    // and the migrations then find the tables without schema-qualified names.
    extra: schema ? { options: `-c search_path=${schema}` } : undefined,
    applicationName: 'bookings-example',
    // As the README advises: while Postgres is unreachable, a request waits at most this long
    // for a connection and then gets a 503, instead of waiting without end.
    connectTimeoutMS: 5_000,
  });
  await dataSource.initialize();
  try {
    if (schema) await dataSource.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await dataSource.runMigrations({ transaction: 'each' });
  } catch (error) {
    await dataSource.destroy();
    throw error;
  }
  return dataSource;
}
