// Renders this module's outcomes: problem+json errors with their headers, and replays with
// the stored body byte for byte. Bound by @Idempotent() on the route, so an application's
// global filters do not reformat them.
import { Catch, StreamableFile, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { ORIGINAL_STATUS_HEADER, REPLAYED_HEADER } from './idempotency.constants.js';
import { IdempotencyException } from './idempotency.exceptions.js';
import { IdempotentReplay } from './idempotency.replay.js';

const TEXTUAL = /^(text\/|application\/([\w.+-]*\+)?(json|xml|javascript)\b)/i;

@Catch(IdempotencyException, IdempotentReplay)
export class IdempotencyExceptionFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: IdempotencyException | IdempotentReplay, host: ArgumentsHost): void {
    const adapter = this.adapterHost.httpAdapter;
    const response = host.switchToHttp().getResponse();
    if (exception instanceof IdempotentReplay) {
      const { status, headers, body } = exception.response;
      for (const [name, value] of Object.entries(headers)) adapter.setHeader(response, name, value);
      adapter.setHeader(response, REPLAYED_HEADER, 'true');
      adapter.setHeader(response, ORIGINAL_STATUS_HEADER, String(status));
      const replayStatus = exception.replayStatus === 'original' ? status : exception.replayStatus;
      adapter.reply(response, toSendable(body, headers['content-type']), replayStatus);
      return;
    }
    for (const [name, value] of Object.entries(exception.headers)) {
      adapter.setHeader(response, name, value);
    }
    adapter.setHeader(response, 'Content-Type', 'application/problem+json');
    adapter.reply(response, exception.getProblem(), exception.getStatus());
  }
}

/** Text goes out as a string (both adapters send it untouched); anything else as bytes. */
function toSendable(
  body: Buffer,
  contentType: string | undefined,
): string | StreamableFile | undefined {
  if (body.length === 0) return undefined;
  if (contentType && TEXTUAL.test(contentType)) return body.toString('utf8');
  return new StreamableFile(body, { length: body.length });
}
