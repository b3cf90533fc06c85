// Fills the record table with rows shaped like a production table's, in one
// INSERT ... SELECT generate_series per step: 85% completed and live, 14% completed and expired
// but not yet purged, 1% in flight whose process died (lease passed). Stored responses are
// the bench handler's own, created_at spread over the retention window.
import pg from 'pg';
import { computeFingerprint, idempotencyRecordsDdl, idempotencyWaitersDdl } from '../src/index.js';
import { BODY } from './load.js';

const RESPONSE_BODY = Buffer.from(
  JSON.stringify({ id: 1, sku: 'bench-sku', qty: 2, status: 'accepted' }),
);
const RESPONSE_HEADERS = JSON.stringify({ 'content-type': 'application/json; charset=utf-8' });

export interface TableState {
  rows: number;
  bytes: number;
}

export class TableFiller {
  private filled = 0;

  constructor(
    private readonly url: string,
    /** Unquoted, unqualified. */
    private readonly table: string,
  ) {}

  /** Creates the table empty (dropping an old one) with the module's own migrations, both. */
  async reset(): Promise<void> {
    await this.session(async (client) => {
      await client.query(`DROP TABLE IF EXISTS "${this.table}"`);
      for (const ddl of [idempotencyRecordsDdl, idempotencyWaitersDdl]) {
        for (const statement of ddl(this.table).up) await client.query(statement);
      }
    });
    this.filled = 0;
  }

  /** Drops the table: a million rows are 300 MB of someone's test database. */
  async drop(): Promise<void> {
    await this.session((client) => client.query(`DROP TABLE IF EXISTS "${this.table}"`));
    this.filled = 0;
  }

  /** Adds fill rows until `size` of them exist, then leaves the table as autovacuum would. */
  async fillTo(size: number): Promise<void> {
    if (size <= this.filled) return;
    const fingerprint = computeFingerprint({
      method: 'POST',
      url: '/orders',
      body: JSON.parse(BODY),
      contentType: 'application/json',
    });
    await this.session(async (client) => {
      await client.query(
        `INSERT INTO "${this.table}" (scope, idempotency_key, fingerprint, state, fencing_token,
                                     locked_until, response_status, response_headers,
                                     response_body, created_at, completed_at, expires_at)
         SELECT '', 'fill-' || i, $3::bytea,
                CASE WHEN kind = 'stuck' THEN 'in_progress' ELSE 'completed' END,
                i,
                CASE WHEN kind = 'stuck' THEN created + interval '60 seconds' END,
                CASE WHEN kind = 'stuck' THEN NULL ELSE 201 END,
                CASE WHEN kind = 'stuck' THEN NULL ELSE $4::jsonb END,
                CASE WHEN kind = 'stuck' THEN NULL ELSE $5::bytea END,
                created,
                CASE WHEN kind = 'stuck' THEN NULL ELSE created + interval '20 milliseconds' END,
                created + interval '48 hours'
           FROM generate_series($1::bigint, $2::bigint - 1) AS i,
                LATERAL (SELECT CASE WHEN i % 100 < 85 THEN 'live'
                                     WHEN i % 100 < 99 THEN 'expired'
                                     ELSE 'stuck' END AS kind) AS k,
                LATERAL (SELECT now() - CASE WHEN kind = 'live'
                                             THEN ((i * 7919) % 169000) * interval '1 second'
                                             ELSE interval '48 hours' + ((i * 7919) % 18000) * interval '1 second'
                                        END AS created) AS c`,
        [this.filled, size, fingerprint, RESPONSE_HEADERS, RESPONSE_BODY],
      );
      // A table that grew over days has been vacuumed and analysed; one filled in seconds has
      // not, and autovacuum starting mid-measurement would only add noise.
      await client.query(`VACUUM ANALYZE "${this.table}"`);
      await client.query('CHECKPOINT').catch(() => undefined); // needs superuser or pg_checkpoint
    });
    this.filled = size;
  }

  async state(): Promise<TableState> {
    return this.session(async (client) => {
      const { rows } = await client.query<{ rows: string; bytes: string }>(
        `SELECT count(*) AS rows, pg_total_relation_size('"${this.table}"') AS bytes FROM "${this.table}"`,
      );
      return { rows: Number(rows[0].rows), bytes: Number(rows[0].bytes) };
    });
  }

  private async session<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: this.url, application_name: 'bench-fill' });
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end();
    }
  }
}
