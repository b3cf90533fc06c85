// A Postgres storage adapter for @node-idempotency/nestjs. Upstream has one
// (packages/storage-adapter-postgres in github.com/mahendraHegde/node-idempotency) but it is
// not published to npm, so the benchmark carries this rewrite. It issues the same statements
// with the same semantics and defaults: an UNLOGGED table keyed by the cache key, one
// INSERT ... ON CONFLICT DO UPDATE ... WHERE expired for setIfNotExists, a SELECT for get, an
// upsert for set, all as unnamed (unprepared) queries on a pg Pool. `logged: true` is the
// benchmark's only departure, for a like-for-like run: a logged table, as this module uses.
'use strict';
const { Pool } = require('pg');

class BenchPostgresStorage {
  constructor({ connectionString, max, logged = false, table = 'idempotency' }) {
    const schema = logged ? 'bench_node_idempotency_logged' : 'bench_node_idempotency';
    // application_name only labels the connections so the harness can find their backends;
    // idleTimeoutMillis: 0 keeps the pool open between interleaved runs, as bench/app.ts does.
    this.pool = new Pool({
      connectionString,
      max,
      application_name: logged ? 'bench-peer-logged' : 'bench-peer',
      idleTimeoutMillis: 0,
    });
    this.tableType = logged ? '' : 'UNLOGGED';
    this.schema = schema;
    this.tableId = `"${schema}"."${table}"`;
    this.table = table;
    this.defaultTtlMs = 15 * 60 * 1000;
  }

  async connect() {
    const client = await this.pool.connect();
    try {
      await client.query(`BEGIN;
        CREATE SCHEMA IF NOT EXISTS "${this.schema}";
        CREATE ${this.tableType} TABLE IF NOT EXISTS ${this.tableId} (
          key VARCHAR(255) PRIMARY KEY,
          created_at TIMESTAMPTZ DEFAULT NOW() NOT NULL,
          data TEXT,
          expires_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX IF NOT EXISTS idx_${this.table}_expires_at ON ${this.tableId} (expires_at);
        COMMIT;`);
    } finally {
      client.release();
    }
  }

  async disconnect() {
    await this.pool.end();
  }

  async get(key) {
    const { rows } = await this.pool.query(
      `SELECT data FROM ${this.tableId} WHERE key = $1 AND expires_at > NOW()`,
      [key],
    );
    return rows[0]?.data || undefined;
  }

  async set(key, val, { ttl = this.defaultTtlMs } = {}) {
    await this.pool.query(
      `INSERT INTO ${this.tableId} (key, data, expires_at)
       VALUES ($1, $2, NOW() + $3 * INTERVAL '1 millisecond')
       ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at`,
      [key, val, ttl],
    );
  }

  async setIfNotExists(key, val, { ttl = this.defaultTtlMs } = {}) {
    // Inserts the key, or takes over a row whose expiry passed; false when a live row exists.
    const { rowCount } = await this.pool.query(
      `INSERT INTO ${this.tableId} (key, data, expires_at)
       VALUES ($1, $2, NOW() + $3 * INTERVAL '1 millisecond')
       ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, expires_at = EXCLUDED.expires_at
       WHERE ${this.tableId}.expires_at < NOW()
       RETURNING key, expires_at`,
      [key, val, ttl],
    );
    return !!rowCount && rowCount > 0;
  }
}

module.exports = { BenchPostgresStorage };
