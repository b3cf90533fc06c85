// The application the fingerprint tests run against, under Express or Fastify: JSON, query,
// raw and text bodies, and uploads parsed before or after the idempotency check.
import {
  Body,
  Controller,
  Post,
  Query,
  Req,
  UseInterceptors,
  Injectable,
  type CallHandler,
  type ExecutionContext,
  type INestApplication,
  type NestInterceptor,
  type Type,
} from '@nestjs/common';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import {
  FileFieldsInterceptor as FastifyFileFieldsInterceptor,
  FileInterceptor as FastifyFileInterceptor,
} from '@nestjs/platform-fastify/multipart';
import {
  FileFieldsInterceptor,
  FileInterceptor,
  type NestExpressApplication,
} from '@nestjs/platform-express';
import { Test } from '@nestjs/testing';
import { json } from 'express';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Idempotent, IdempotencyModule } from '../../src/index.js';
import { dropTable, RunCounter, uniqueTableName, type AdapterName } from '../support/test-app.js';
import { listenOnLoopback } from '../support/nest-app.js';

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

/** Starts reading the body as a streaming parser would, and hands on without waiting. */
@Injectable()
class StreamingReader implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler) {
    const request = context.switchToHttp().getRequest();
    (request.raw ?? request).on('data', () => undefined);
    return next.handle();
  }
}

/** Reads the whole body and keeps nothing of it. */
@Injectable()
class DiscardingReader implements NestInterceptor {
  async intercept(context: ExecutionContext, next: CallHandler) {
    const request = context.switchToHttp().getRequest();
    await readStream(request);
    return next.handle();
  }
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

  /** Routes set up so that the body cannot be compared: the check refuses them. */
  @Controller('fp/refused')
  class RefusedController {
    constructor(private readonly runs: RunCounter) {}

    @Post('streaming')
    @Idempotent()
    @UseInterceptors(StreamingReader)
    streaming() {
      this.runs.hit('refused');
      return {};
    }

    @Post('discarded')
    @Idempotent()
    @UseInterceptors(DiscardingReader)
    discarded() {
      this.runs.hit('refused');
      return {};
    }

    /** Parsed into Dates (see createFingerprintApp): compared by raw bytes, or refused. */
    @Post('dated')
    @Idempotent()
    dated(@Body() body: { at?: unknown }) {
      this.runs.hit('dated');
      return { run: this.runs.count('dated'), date: body.at instanceof Date };
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

  return [FingerprintController, IdempotentUploadsController, RefusedController];
}

/** A JSON parser some apps use: ISO dates come out as Date objects. */
const dateReviver = (_key: string, value: unknown) =>
  typeof value === 'string' && /^\d{4}-\d\d-\d\dT/.test(value) ? new Date(value) : value;
const datedJson = (body: Buffer) => JSON.parse(body.toString('utf8'), dateReviver);

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
    providers: [RunCounter, StreamingReader, DiscardingReader],
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
    fastify.useBodyParser('application/x-dated', {}, (_request, body, done) =>
      done(null, datedJson(body)),
    );
    app = fastify;
  } else {
    const express = moduleRef.createNestApplication<NestExpressApplication>(options);
    // Beside Nest's JSON parser: Nest skips its own when a middleware is named jsonParser.
    const datedParser = json({
      type: 'application/x-dated',
      reviver: dateReviver,
      verify: setup.rawBody ? (request: any, _response, raw) => (request.rawBody = raw) : undefined,
    });
    express.use(function datedJsonMiddleware(request: any, response: any, next: () => void) {
      datedParser(request, response, next);
    });
    app = express;
  }
  const url = await listenOnLoopback(app);
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
