// Nest 12 + @nestjs/typeorm 12 + TypeORM 1, as native ESM: the idempotency module reuses the
// app's DataSource, whose migrations create this consumer's own record table.
import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { createIdempotencyRecordsMigration, IdempotencyModule } from 'nest-idempotency-pg';
import { DataSource } from 'typeorm';
import { BookingsController } from './bookings.controller.js';

const table = process.env.IDEM_TABLE ?? 'consumer_nest12_esm_express';

@Module({
  imports: [
    TypeOrmModule.forRoot({
      type: 'postgres',
      url: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
      connectTimeoutMS: 5_000,
      migrations: [createIdempotencyRecordsMigration(table)],
      migrationsTableName: `${table}_migrations`,
      migrationsRun: true,
    }),
    IdempotencyModule.forRootAsync({
      inject: [DataSource],
      useFactory: (dataSource: DataSource) => ({ dataSource, tableName: table }),
    }),
  ],
  controllers: [BookingsController],
})
export class AppModule {}
