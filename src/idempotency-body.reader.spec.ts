import { Readable, Writable } from 'node:stream';
import { isUnread, readAndRestore, type RequestStream } from './idempotency-body.reader.js';
import {
  IdempotencyBodyIncompleteException,
  IdempotencyBodyTooLargeException,
} from './idempotency.exceptions.js';

/** A request stream as Node's HTTP parser feeds it: chunks, then `complete`, then the end. */
function request(chunks: string[], delayMs = 0): RequestStream {
  const stream: RequestStream = new Readable({ read() {} });
  stream.complete = false;
  let sent = 0;
  const next = () => {
    if (sent < chunks.length) {
      stream.push(Buffer.from(chunks[sent++]));
      setTimeout(next, delayMs);
      return;
    }
    stream.complete = true;
    stream.push(null);
  };
  setTimeout(next, delayMs);
  return stream;
}

async function readAll(stream: Readable): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += chunk;
  return text;
}

describe('readAndRestore', () => {
  it.each([
    ['arriving slowly', ['a'.repeat(70_000), 'b', 'c'.repeat(5)], 5],
    ['all at once', ['abc', 'def'], 0],
    ['empty', [], 0],
  ])('gives the next reader the whole body and its end: %s', async (_how, chunks, delayMs) => {
    const stream = request(chunks, delayMs);
    expect(isUnread(stream)).toBe(true);
    const body = await readAndRestore(stream, 1 << 20, undefined);
    expect(body.toString()).toBe(chunks.join(''));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(stream.readableEnded).toBe(chunks.length === 0);
    expect(await readAll(stream)).toBe(chunks.join(''));
  });

  it('gives back a body that had fully arrived before it was read', async () => {
    const stream: RequestStream = new Readable({ read() {} });
    stream.push(Buffer.from('all of it'));
    stream.complete = true;
    stream.push(null);
    expect((await readAndRestore(stream, 1 << 20, 9)).toString()).toBe('all of it');
    expect(await readAll(stream)).toBe('all of it');
  });

  it('works for a reader that pipes the stream, as busboy does', async () => {
    const stream = request(['--boundary', '\r\n', 'part']);
    await readAndRestore(stream, 1 << 20, undefined);
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    });
    await new Promise((resolve) => stream.pipe(sink).on('finish', resolve));
    expect(Buffer.concat(chunks).toString()).toBe('--boundary\r\npart');
  });

  it('refuses a declared length over the limit without reading a byte', async () => {
    const stream = request(['x'.repeat(100)]);
    await expect(readAndRestore(stream, 10, 100)).rejects.toBeInstanceOf(
      IdempotencyBodyTooLargeException,
    );
    expect(isUnread(stream)).toBe(true);
  });

  it('stops reading a chunked body at the limit', async () => {
    const stream = request(['x'.repeat(8), 'x'.repeat(8), 'x'.repeat(8)], 2);
    await expect(readAndRestore(stream, 10, undefined)).rejects.toBeInstanceOf(
      IdempotencyBodyTooLargeException,
    );
  });

  it('reports a body that fails or closes before it is complete', async () => {
    const failing = request(['abc'], 20);
    setTimeout(() => failing.destroy(new Error('aborted')), 5);
    await expect(readAndRestore(failing, 1 << 20, undefined)).rejects.toBeInstanceOf(
      IdempotencyBodyIncompleteException,
    );
    const closing = request(['abc'], 20);
    setTimeout(() => closing.destroy(), 5);
    await expect(readAndRestore(closing, 1 << 20, undefined)).rejects.toBeInstanceOf(
      IdempotencyBodyIncompleteException,
    );
  });
});
