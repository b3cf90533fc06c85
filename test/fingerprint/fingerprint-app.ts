// The application the fingerprint tests run against, under Express or Fastify: JSON, query,
// raw and text bodies, and uploads parsed before or after the idempotency check.
import {
  Body,
  Controller,
  Post,
  Query,
  Req,
  UseInterceptors,
  type INestApplication,
  type Type,
} from '@nestjs/common';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import {
  FileFieldsInterceptor as FastifyFileFieldsInterceptor,
  FileInterceptor as FastifyFileInterceptor,
} from '@nestjs/platform-fastify/multipart';
import { FileFieldsInterceptor, FileInterceptor } from '@nestjs/platform-express';
import { Test } from '@nestjs/testing';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Idempotent, IdempotencyModule } from '../../src/index.js';
import { dropTable, RunCounter, uniqueTableName, type AdapterName } from '../support/test-app.js';

export interface FingerprintApp {
  url: string;
  runs: RunCounter;
  close(): Promise<void>;
}

export interface FingerprintAppSetup {
  /** NestFactory's `rawBody: true`. */
  rawBody?: boolean;
}

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** What a handler saw of an uploaded file. */
function seen(file: any) {
  if (!file) return null;
  const bytes: Buffer = file.buffer ?? readFileSync(file.path);
  return { field: file.fieldname, name: file.originalname, size: bytes.length, sha: sha(bytes) };
}

/** Reads the request stream itself, as a handler of a body no parser reads would. */
async function readStream(request: any): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request.raw ?? request) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function controllers(adapter: AdapterName, uploads: string): Type[] {
  const File = adapter === 'express' ? FileInterceptor : FastifyFileInterceptor;
  const Fields = adapter === 'express' ? FileFieldsInterceptor : FastifyFileFieldsInterceptor;

  @Controller('fp')
  class FingerprintController {
    constructor(private readonly runs: RunCounter) {}

    private hit(name: string) {
      this.runs.hit(name);
      return this.runs.count(name);
    }

    @Post('json')
    @Idempotent()
    json(@Body() body: unknown) {
      return { run: this.hit('json'), type: Array.isArray(body) ? 'array' : typeof body };
    }

    @Post('query')
    @Idempotent()
    query(@Query() query: unknown) {
      return { run: this.hit('query'), query };
    }

    /** Parsed by the adapter (a string, a Buffer, a form), or left for the handler to read. */
    @Post('body')
    @Idempotent()
    async body(@Body() body: unknown, @Req() request: any) {
      const run = this.hit('body');
      if (body !== undefined && !(typeof body === 'object' && !Buffer.isBuffer(body))) {
        const bytes = Buffer.isBuffer(body) ? body : Buffer.from(String(body));
        return { run, parsed: true, sha: sha(bytes) };
      }
      if (body !== undefined) return { run, parsed: true, form: body };
      const bytes = await readStream(request);
      return { run, parsed: false, size: bytes.length, sha: sha(bytes) };
    }

    /** The upload interceptor runs first (it is written below @Idempotent()). */
    @Post('upload/parsed-first')
    @Idempotent()
    @UseInterceptors(File('file'))
    parsedFirst(@Req() request: any) {
      return {
        run: this.hit('parsed-first'),
        title: request.body?.title,
        file: seen(request.file),
      };
    }

    /** The idempotency check runs first: it reads the body and puts it back for the parser. */
    @Post('upload/checked-first')
    @UseInterceptors(File('file'))
    @Idempotent()
    checkedFirst(@Req() request: any) {
      return {
        run: this.hit('checked-first'),
        title: request.body?.title,
        file: seen(request.file),
      };
    }

    @Post('upload/disk')
    @Idempotent()
    @UseInterceptors(File('file', { dest: uploads }))
    disk(@Req() request: any) {
      return { run: this.hit('disk'), title: request.body?.title, file: seen(request.file) };
    }

    @Post('upload/fields')
    @Idempotent()
    @UseInterceptors(Fields([{ name: 'a' }, { name: 'b' }]))
    fields(@Req() request: any) {
      const files = Object.values(request.files ?? {}).flat();
      return { run: this.hit('fields'), files: files.map(seen) };
    }
  }

  /** @Idempotent() on the class runs before any interceptor on a method. */
  @Controller('fp/class')
  @Idempotent()
  class IdempotentUploadsController {
    constructor(private readonly runs: RunCounter) {}

    @Post('upload')
    @UseInterceptors(File('file'))
    upload(@Req() request: any) {
      this.runs.hit('class-upload');
      const run = this.runs.count('class-upload');
      return { run, title: request.body?.title, file: seen(request.file) };
    }
  }

  return [FingerprintController, IdempotentUploadsController];
}

export async function createFingerprintApp(
  adapter: AdapterName,
  setup: FingerprintAppSetup = {},
): Promise<FingerprintApp> {
  const tableName = uniqueTableName('idem_fp');
  const uploads = mkdtempSync(join(tmpdir(), 'idem-fp-'));
  const moduleRef = await Test.createTestingModule({
    imports: [
      IdempotencyModule.forRoot({
        connection: process.env.DATABASE_URL,
        runMigrations: true,
        tableName,
      }),
    ],
    controllers: controllers(adapter, uploads),
    providers: [RunCounter],
  }).compile();
  const options = { logger: false as const, rawBody: setup.rawBody };
  let app: INestApplication;
  if (adapter === 'fastify') {
    const fastify = moduleRef.createNestApplication<NestFastifyApplication>(
      new FastifyAdapter(),
      options,
    );
    // Fastify answers 415 to types it has no parser for: these reach the handler as Buffers.
    fastify.useBodyParser(['application/octet-stream', 'application/vnd.api+json']);
    // A parser that leaves the stream to the handler, as Express leaves unparsed types.
    fastify
      .getHttpAdapter()
      .getInstance()
      .addContentTypeParser('application/x-unread', (_request, _payload, done) =>
        done(null, undefined),
      );
    app = fastify;
  } else {
    app = moduleRef.createNestApplication(options);
  }
  await app.listen(0, '127.0.0.1');
  const url = (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
  return {
    url,
    runs: app.get(RunCounter),
    async close() {
      await app.close();
      await dropTable(tableName);
      rmSync(uploads, { recursive: true, force: true });
    },
  };
}
