// The example's own table, migrated by the same DataSource as the idempotency records.
import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateBookings1764403300000 implements MigrationInterface {
  name = 'CreateBookings1764403300000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE IF NOT EXISTS bookings (
        id           uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
        partner_id   text          NOT NULL,
        status       text          NOT NULL,
        currency     char(3)       NOT NULL,
        total_price  numeric(12,2) NOT NULL,
        policyholder jsonb         NOT NULL,
        quotes       jsonb         NOT NULL,
        created_at   timestamptz   NOT NULL DEFAULT now()
      )`);
    await queryRunner.query(
      `CREATE INDEX IF NOT EXISTS bookings_partner_id_idx ON bookings (partner_id, created_at)`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE IF EXISTS bookings`);
  }
}
