// Adds has_waiters to the record table: set on an in-flight record while a duplicate waits
// for it (`waitInFlightMs`), so only then does completing or releasing it send a
// notification. A table without the column keeps working: waits then poll instead.
// Run after CreateIdempotencyRecords1764403200000 (safe to run on a table that has it).
import type { MigrationInterface } from 'typeorm';
import { idempotencyMigrationClass, idempotencyTableNames } from '../src/idempotency-table.js';

/** The DDL, for a table name of your choice. */
export function idempotencyWaitersDdl(tableName?: string): { up: string[]; down: string[] } {
  const { table } = idempotencyTableNames(tableName);
  return {
    // A constant default: Postgres 11+ adds the column without rewriting the table.
    up: [
      `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS has_waiters boolean NOT NULL DEFAULT false`,
    ],
    down: [`ALTER TABLE ${table} DROP COLUMN IF EXISTS has_waiters`],
  };
}

/** Builds the migration for a custom table name, the companion of createIdempotencyRecordsMigration. */
export function createIdempotencyWaitersMigration(
  tableName?: string,
): new () => MigrationInterface {
  return idempotencyMigrationClass(
    'AddIdempotencyWaiters',
    1795910400000,
    idempotencyWaitersDdl(tableName),
    tableName,
  );
}

/** The migration for the default table, `idempotency_records`. */
export const AddIdempotencyWaiters1795910400000 = createIdempotencyWaitersMigration();
