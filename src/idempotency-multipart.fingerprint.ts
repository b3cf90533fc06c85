// Uploads, as the fingerprint sees them. Read before any upload interceptor: the parts'
// bytes without the boundary, which a client picks anew on every send (fetch and FormData
// do), so a retry matches and any other difference does not. Parsed by an upload
// interceptor (multer on Express, @nestjs/platform-fastify/multipart on Fastify): the text
// fields, and each file's field, name, type, size and SHA-256, read from memory or disk.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { IdempotencyRequestUnsupportedException } from './idempotency.exceptions.js';
import type { FingerprintBody } from './idempotency.fingerprint.js';

const CRLF = Buffer.from('\r\n');

export function isMultipart(contentType: string): boolean {
  return /^\s*multipart\//i.test(contentType);
}

/**
 * The parts between the delimiters, found as busboy finds them (leftmost, non-overlapping
 * `CRLF--boundary` in the body with a CRLF before it), so the list of parts decides
 * everything a parser sees. Undefined when the boundary is not plain (none, or two): the
 * caller then compares the bytes as they are.
 */
export function multipartBody(contentType: string, body: Buffer): FingerprintBody | undefined {
  const [mediaType, ...parameters] = contentType.split(';');
  const boundaries = parameters.filter((parameter) => /^\s*boundary\s*=/i.test(parameter));
  if (boundaries.length !== 1) return undefined;
  const match = /^\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^\s"]{1,70}))\s*$/i.exec(boundaries[0]);
  if (!match) return undefined;
  const delimiter = Buffer.concat([CRLF, Buffer.from(`--${match[1] ?? match[2]}`, 'latin1')]);
  const parts: Buffer[] = [];
  // The CRLF busboy puts before the body: a delimiter may open the body without one.
  let from = 0;
  if (body.subarray(0, delimiter.length - 2).equals(delimiter.subarray(2))) {
    parts.push(body.subarray(0, 0));
    from = delimiter.length - 2;
  }
  for (;;) {
    const at = body.indexOf(delimiter, from);
    if (at === -1) break;
    parts.push(body.subarray(from, at));
    from = at + delimiter.length;
  }
  parts.push(body.subarray(from));
  const others = parameters.filter((parameter) => parameter !== boundaries[0]);
  return {
    kind: 'multipart',
    contentType: [mediaType, ...others].map((part) => part.trim()).join(';'),
    parts,
  };
}

/** A file as multer and Nest's Fastify upload interceptors describe it. */
interface UploadedFile {
  fieldname?: string;
  originalname?: string;
  encoding?: string;
  mimetype?: string;
  size?: number;
  buffer?: Buffer;
  path?: string;
}

/**
 * What an upload interceptor made of the body: `request.body` (text fields), `request.file`,
 * `request.files` (an array, or arrays by field), each file reduced to JSON values.
 */
export async function uploadBody(request: {
  body?: unknown;
  file?: unknown;
  files?: unknown;
}): Promise<FingerprintBody> {
  // @fastify/multipart puts methods by these names on the request; a parsed upload is data.
  const file = typeof request.file === 'object' ? request.file : null;
  const files = typeof request.files === 'object' ? request.files : null;
  return {
    kind: 'upload',
    value: {
      fields: request.body ?? null,
      file: file && (await describe(file as UploadedFile)),
      files: files && (await describeAll(files)),
    },
  };
}

async function describeAll(files: object): Promise<unknown> {
  if (Array.isArray(files)) return Promise.all(files.map((file) => describe(file)));
  const byField: Record<string, unknown> = {};
  for (const [field, list] of Object.entries(files)) byField[field] = await describeAll(list);
  return byField;
}

async function describe(file: UploadedFile): Promise<Record<string, unknown>> {
  return {
    fieldname: file.fieldname ?? null,
    originalname: file.originalname ?? null,
    encoding: file.encoding ?? null,
    mimetype: file.mimetype ?? null,
    size: file.size ?? null,
    sha256: await contentHash(file),
  };
}

async function contentHash(file: UploadedFile): Promise<string> {
  if (Buffer.isBuffer(file.buffer)) return createHash('sha256').update(file.buffer).digest('hex');
  if (typeof file.path === 'string') {
    const hash = createHash('sha256');
    try {
      for await (const chunk of createReadStream(file.path)) hash.update(chunk as Buffer);
    } catch (error) {
      throw new IdempotencyRequestUnsupportedException(
        `The uploaded file "${file.originalname}" could not be read from ${file.path} to fingerprint it: ${(error as Error).message}.`,
      );
    }
    return hash.digest('hex');
  }
  throw new IdempotencyRequestUnsupportedException(
    `The upload's storage engine keeps neither the bytes (file.buffer) nor a path (file.path) of "${file.originalname}", so two different files could look the same. Let the idempotency check run before the upload interceptor (write @Idempotent() below @UseInterceptors(FileInterceptor(...))), or use memory or disk storage.`,
  );
}
