// The record table as a TypeORM entity, for applications that want to inspect records with
// their own repositories. The module itself issues plain SQL (see PostgresIdempotencyStore).
import { Column, Entity, Index, PrimaryColumn } from 'typeorm';

@Entity({ name: 'idempotency_records', synchronize: false })
export class IdempotencyRecord {
  /** Who owns the key (see the `scope` option). */
  @PrimaryColumn({ type: 'text' })
  scope!: string;

  /** The client's key. */
  @PrimaryColumn({ name: 'idempotency_key', type: 'text' })
  key!: string;

  /** SHA-256 of method, path, query and canonical body. */
  @Column({ type: 'bytea' })
  fingerprint!: Buffer;

  @Column({ type: 'text' })
  state!: 'in_progress' | 'completed';

  /** Changes on every claim; only its holder may complete or release the record. */
  @Column({ name: 'fencing_token', type: 'bigint' })
  fencingToken!: string;

  /** While in progress: when the lease passes and another request may take over. */
  @Column({ name: 'locked_until', type: 'timestamptz', nullable: true })
  lockedUntil!: Date | null;

  @Column({ name: 'response_status', type: 'smallint', nullable: true })
  responseStatus!: number | null;

  @Column({ name: 'response_headers', type: 'jsonb', nullable: true })
  responseHeaders!: Record<string, string> | null;

  @Column({ name: 'response_body', type: 'bytea', nullable: true })
  responseBody!: Buffer | null;

  @Column({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'completed_at', type: 'timestamptz', nullable: true })
  completedAt!: Date | null;

  @Index()
  @Column({ name: 'expires_at', type: 'timestamptz' })
  expiresAt!: Date;
}
