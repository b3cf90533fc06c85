// Nest 11 on Fastify: the idempotency module opens (and closes) its own DataSource from a URL
// and creates this consumer's record table on start.
import { Module } from '@nestjs/common';
import { IdempotencyModule } from 'nest-idempotency-pg';
import { BookingsController } from './bookings.controller';

@Module({
  imports: [
    IdempotencyModule.forRoot({
      connection: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
      tableName: process.env.IDEM_TABLE ?? 'consumer_nest11_cjs_fastify',
      runMigrations: true,
    }),
  ],
  controllers: [BookingsController],
})
export class AppModule {}
