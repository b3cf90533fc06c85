// Reads a request body that no parser has read yet, and puts it back: whoever reads the
// request after the idempotency check (multer, @fastify/multipart, a handler reading the
// stream) gets the same bytes, as if it were the first.
import type { Readable } from 'node:stream';
import {
  IdempotencyBodyIncompleteException,
  IdempotencyBodyTooLargeException,
} from './idempotency.exceptions.js';

/** A Node request (`IncomingMessage`, `Http2ServerRequest`): `complete` once all of it arrived. */
export type RequestStream = Readable & { complete?: boolean };

/** Whether nothing has started reading the stream (no parser, no listener, not ended). */
export function isUnread(stream: RequestStream): boolean {
  return stream.readableFlowing === null && !stream.readableEnded && !stream.destroyed;
}

/**
 * Reads the whole body in paused mode, then `unshift`s it back before the stream reports its
 * end. Node allows `unshift` until 'end' is emitted, and an ended stream emits 'end' only
 * once its buffer is empty (`endReadableNT` checks for "one last unshift"), so the next
 * reader sees the body and then the end, as if nothing had read it.
 */
export function readAndRestore(
  stream: RequestStream,
  limit: number,
  declaredLength: number | undefined,
): Promise<Buffer> {
  if (declaredLength !== undefined && declaredLength > limit) {
    return Promise.reject(new IdempotencyBodyTooLargeException(limit));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onError);
    };
    const finish = () => {
      stop();
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
      // Nothing to put back for an empty body: the stream has ended for every reader anyway.
      if (size > 0) stream.unshift(body);
      resolve(body);
    };
    function onReadable() {
      let chunk: Buffer | null;
      while ((chunk = stream.read()) !== null) {
        chunks.push(chunk);
        size += chunk.length;
        if (size > limit) {
          stop();
          return reject(new IdempotencyBodyTooLargeException(limit));
        }
      }
      // All bytes have arrived and been read, and 'end' is at most scheduled: put them back.
      if (stream.complete) finish();
    }
    // Reached only by an empty chunked body: `read()` ends a stream it finds empty.
    const onEnd = () => finish();
    // The client went away or sent a broken body: nothing was put back, nothing will run.
    const onError = () => {
      stop();
      reject(new IdempotencyBodyIncompleteException());
    };
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.on('close', onError);
  });
}
