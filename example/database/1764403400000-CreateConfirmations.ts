// The confirmation sender's table: one row per confirmation sent. No unique constraint on
// purpose: it is @Idempotent() that keeps a redelivered event from sending twice.
import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateConfirmations1764403400000 implements MigrationInterface {
  name = 'CreateConfirmations1764403400000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE IF NOT EXISTS confirmations (
        id         bigserial   PRIMARY KEY,
        booking_id uuid        NOT NULL,
        event_id   text        NOT NULL,
        email      text        NOT NULL,
        sent_at    timestamptz NOT NULL DEFAULT now()
      )`);
    await queryRunner.query(
      `CREATE INDEX IF NOT EXISTS confirmations_booking_id_idx ON confirmations (booking_id)`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE IF EXISTS confirmations`);
  }
}
