// Boots the app on Fastify on a free loopback port and prints `READY <port>` for the matrix
// driver (and, with REPORT_MODULES set, every CommonJS file loaded, to count copies of Nest).
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import type { AddressInfo } from 'node:net';
import { AppModule } from './app.module';

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create<NestFastifyApplication>(AppModule, new FastifyAdapter());
  app.enableShutdownHooks();
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  if (process.env.REPORT_MODULES)
    console.log(`MODULES ${JSON.stringify(Object.keys(require.cache))}`);
  console.log(`READY ${port}`);
}

void bootstrap();
