// The app http-only-server.ts starts once the optional peers are blocked.
import 'reflect-metadata';
import { Body, Controller, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { AddressInfo } from 'node:net';
import { Idempotent, IdempotencyModule } from '../../src/index.js';

@Controller()
class ChargesController {
  private runs = 0;

  @Post('charges')
  @Idempotent()
  charge(@Body() body: unknown) {
    return { run: ++this.runs, body };
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      connection: process.env.DATABASE_URL,
      tableName: process.env.IDEM_TABLE,
      runMigrations: true,
      purge: { enabled: false },
    }),
  ],
  controllers: [ChargesController],
})
class HttpOnlyModule {}

export async function startHttpOnlyApp(): Promise<number> {
  const app = await NestFactory.create(HttpOnlyModule, { logger: ['error'] });
  await app.listen(0, '127.0.0.1');
  return (app.getHttpServer().address() as AddressInfo).port;
}
