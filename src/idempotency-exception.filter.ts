// Renders this module's outcomes over HTTP: problem+json errors with their headers, and
// replays with the stored body byte for byte. Bound by @Idempotent() on the route, so an
// application's global filters do not reformat them.
import { Catch, StreamableFile, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { isUtf8 } from 'node:buffer';
import { ORIGINAL_STATUS_HEADER, REPLAYED_HEADER } from './idempotency.constants.js';
import { IdempotencyException } from './idempotency.exceptions.js';
import { IdempotentReplay } from './idempotency.replay.js';
import { forAcceptedEncoding } from './idempotency-replay-encoding.js';

const TEXTUAL = /^(text\/|application\/([\w.+-]*\+)?(json|xml|javascript)\b)/i;
/** The one form Express's res.send() leaves as it is: it rewrites any other (case, order). */
const UTF8_ONLY = /^[^;A-Z]+; charset=utf-8$/;

@Catch(IdempotencyException, IdempotentReplay)
export class IdempotencyExceptionFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: IdempotencyException | IdempotentReplay, host: ArgumentsHost): void {
    // GraphQL and message contexts turn this module's outcomes into their own errors before
    // they get here; anything else goes on to Nest's own handling for that context.
    if (host.getType() !== 'http') return;
    const adapter = this.adapterHost.httpAdapter;
    const response = host.switchToHttp().getResponse();
    if (exception instanceof IdempotentReplay) {
      const { status } = exception.response;
      const { headers, body } = forAcceptedEncoding(
        exception.response.body,
        exception.response.headers,
        host.switchToHttp().getRequest().headers?.['accept-encoding'],
      );
      // Set as stored on Node's response: Express's res.set() would add a charset to a
      // Content-Type that has none (text/csv becomes text/csv; charset=utf-8).
      const raw = response.raw ?? response;
      for (const [name, value] of Object.entries(headers)) raw.setHeader(name, value);
      adapter.setHeader(response, REPLAYED_HEADER, 'true');
      adapter.setHeader(response, ORIGINAL_STATUS_HEADER, String(status));
      const replayStatus = exception.replayStatus === 'original' ? status : exception.replayStatus;
      adapter.reply(response, toSendable(body, headers), replayStatus);
      return;
    }
    for (const [name, value] of Object.entries(exception.headers)) {
      adapter.setHeader(response, name, value);
    }
    adapter.setHeader(response, 'Content-Type', 'application/problem+json');
    // Serialized here: given an object, Nest 11's adapters replace any Content-Type that does
    // not start with application/json (and log a warning) for a status of 400 or more.
    adapter.reply(response, JSON.stringify(exception.getProblem()), exception.getStatus());
  }
}

/**
 * UTF-8 text labelled so goes out as a string (both adapters send it untouched); anything
 * else (binary, another charset or none, an encoded body) as the stored bytes, which neither
 * adapter re-encodes nor relabels: given a string, both add `charset=utf-8` to a Content-Type
 * without one (Express to any, Fastify to JSON types).
 */
function toSendable(
  body: Buffer,
  headers: Record<string, string>,
): string | StreamableFile | undefined {
  if (body.length === 0) return undefined;
  const contentType = headers['content-type'];
  const text =
    !headers['content-encoding'] &&
    contentType !== undefined &&
    TEXTUAL.test(contentType) &&
    UTF8_ONLY.test(contentType) &&
    isUtf8(body);
  return text ? body.toString('utf8') : new StreamableFile(body, { length: body.length });
}
