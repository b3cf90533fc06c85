// Creates the idempotency record table. Add the class to your DataSource's `migrations`, or
// build one for a custom table name with `createIdempotencyRecordsMigration('my_table')`.
import type { MigrationInterface } from 'typeorm';
import {
  EXPIRY_INDEX_OF,
  idempotencyMigrationClass,
  idempotencyTableNames,
} from '../src/idempotency-table.js';

/** The DDL, for a table name of your choice. */
export function idempotencyRecordsDdl(tableName?: string): { up: string[]; down: string[] } {
  const { table, expiryIndex, expiryIndexRenamed } = idempotencyTableNames(tableName);
  const createIndex = `CREATE INDEX IF NOT EXISTS ${expiryIndex} ON ${table} (expires_at)`;
  return {
    up: [
      `CREATE TABLE IF NOT EXISTS ${table} (
        scope            text        NOT NULL,
        idempotency_key  text        NOT NULL,
        fingerprint      bytea       NOT NULL,
        state            text        NOT NULL CHECK (state IN ('in_progress', 'completed')),
        fencing_token    bigint      NOT NULL,
        locked_until     timestamptz,
        response_status  smallint,
        response_headers jsonb,
        response_body    bytea,
        created_at       timestamptz NOT NULL DEFAULT now(),
        completed_at     timestamptz,
        expires_at       timestamptz NOT NULL,
        PRIMARY KEY (scope, idempotency_key)
      )`,
      // A table name over 48 characters: its index may be there already under the name an
      // earlier version gave it (cut by Postgres to 63 bytes), which is kept, not doubled.
      expiryIndexRenamed
        ? `DO $$ BEGIN
             IF NOT EXISTS (${EXPIRY_INDEX_OF.replace('$1', `'${table}'`)}) THEN ${createIndex}; END IF;
           END $$`
        : createIndex,
    ],
    down: [`DROP TABLE IF EXISTS ${table}`],
  };
}

/** Builds a migration class for a custom table name (TypeORM wants classes, not instances). */
export function createIdempotencyRecordsMigration(
  tableName?: string,
): new () => MigrationInterface {
  return idempotencyMigrationClass(
    'CreateIdempotencyRecords',
    1764403200000,
    idempotencyRecordsDdl(tableName),
    tableName,
  );
}

/** The migration for the default table, `idempotency_records`. */
export const CreateIdempotencyRecords1764403200000 = createIdempotencyRecordsMigration();
