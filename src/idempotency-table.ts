// Names of the record table and its index, validated and quoted once.
import { createHash } from 'node:crypto';
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DEFAULT_TABLE_NAME } from './idempotency.constants.js';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
/** Postgres keeps the first 63 bytes of an identifier (NAMEDATALEN - 1). */
const MAX_IDENTIFIER = 63;
const EXPIRY_INDEX_SUFFIX = '_expires_at_idx';

/**
 * A query with a row when the table $1 (a regclass, as text) has an index whose first
 * column is expires_at, whatever its name.
 */
export const EXPIRY_INDEX_OF = `SELECT 1 FROM pg_index AS i
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
   WHERE i.indrelid = to_regclass($1) AND a.attname = 'expires_at'`;

export interface IdempotencyTableNames {
  /** Quoted, possibly schema-qualified table name. */
  table: string;
  /** Quoted name of the index on expires_at (see expiryIndexName). */
  expiryIndex: string;
  /** The same, in the table's schema when it has one (to look the index up). */
  qualifiedExpiryIndex: string;
  /**
   * The table name is over 48 characters: earlier versions created its index under
   * `<table>_expires_at_idx` cut to 63 bytes, expiryIndex is another name.
   */
  expiryIndexRenamed: boolean;
  /** Unquoted table name, for messages and statement names. */
  raw: string;
}

export function idempotencyTableNames(name: string = DEFAULT_TABLE_NAME): IdempotencyTableNames {
  const parts = name.split('.');
  if (parts.length > 2 || !parts.every((part) => IDENTIFIER.test(part))) {
    throw new Error(
      `Invalid idempotency table name "${name}": use letters, digits and underscores, optionally "schema.table".`,
    );
  }
  const quote = (id: string) => `"${id}"`;
  const table = parts[parts.length - 1];
  const schema = parts.length === 2 ? `${quote(parts[0])}.` : '';
  const index = expiryIndexName(table);
  return {
    table: schema + quote(table),
    expiryIndex: quote(index),
    qualifiedExpiryIndex: schema + quote(index),
    expiryIndexRenamed: index !== `${table}${EXPIRY_INDEX_SUFFIX}`,
    raw: name,
  };
}

/**
 * `<table>_expires_at_idx` while that fits in 63 bytes (table names up to 48 characters: their
 * indexes keep the names they have). Past that, Postgres would cut it to 63 bytes: a
 * 63-character table's index would then be named like the table itself, and a table named
 * like another's cut index name would meet it; CREATE ... IF NOT EXISTS skips the second in
 * silence (no index, or no table). A longer name keeps the table name's first 39 characters
 * and adds 8 hex digits of its SHA-1.
 */
export function expiryIndexName(table: string): string {
  const name = `${table}${EXPIRY_INDEX_SUFFIX}`;
  if (Buffer.byteLength(name) <= MAX_IDENTIFIER) return name;
  const hash = createHash('sha1').update(table).digest('hex').slice(0, 8);
  const keep = MAX_IDENTIFIER - EXPIRY_INDEX_SUFFIX.length - hash.length - 1;
  return `${table.slice(0, keep)}_${hash}${EXPIRY_INDEX_SUFFIX}`;
}

/**
 * The LISTEN/NOTIFY channel of records settling in a table: `idem_<8 hex digits of the
 * SHA-1 of its canonical spelling>_settled` (25 bytes whatever the name's length).
 */
export function settledChannel(canonicalSpelling: string): string {
  return `idem_${createHash('sha1').update(canonicalSpelling).digest('hex').slice(0, 8)}_settled`;
}

/**
 * How every instance spells a table, whatever tableName and search_path led it there (from
 * the catalog: `pg_namespace.nspname`, `pg_class.relname`): the bare name in schema public
 * (the default table, and most configurations, as they spell it themselves), `schema.table`
 * elsewhere. Case-sensitive, as the module quotes names.
 */
export function canonicalTableSpelling(schema: string, table: string): string {
  return schema === 'public' ? table : `${schema}.${table}`;
}

/**
 * A migration's name for a table: TypeORM records migrations by name, so each table needs its
 * own, or a second table's migration reads as already run. The default table keeps the bare
 * name; TypeORM reads the timestamp from the name's last 13 digits, so it stays at the end.
 */
export function idempotencyMigrationName(
  base: string,
  timestamp: number,
  tableName: string = DEFAULT_TABLE_NAME,
): string {
  const { raw } = idempotencyTableNames(tableName);
  return raw === DEFAULT_TABLE_NAME ? `${base}${timestamp}` : `${base}_${raw}_${timestamp}`;
}

/** A TypeORM migration class (TypeORM wants classes, not instances) running the given DDL. */
export function idempotencyMigrationClass(
  base: string,
  timestamp: number,
  ddl: { up: string[]; down: string[] },
  tableName?: string,
): new () => MigrationInterface {
  const migrationName = idempotencyMigrationName(base, timestamp, tableName);
  return class IdempotencyMigration implements MigrationInterface {
    name = migrationName;

    async up(queryRunner: QueryRunner): Promise<void> {
      for (const statement of ddl.up) await queryRunner.query(statement);
    }

    async down(queryRunner: QueryRunner): Promise<void> {
      for (const statement of ddl.down) await queryRunner.query(statement);
    }
  };
}
