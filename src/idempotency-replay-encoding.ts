// A body is stored as it was sent, so a compression hook that ran before the bytes reached
// the socket (Fastify's @fastify/compress, in onSend) leaves it encoded for the first client.
// A retry may not accept that encoding (another client, `curl` without --compressed): it gets
// the body decoded, as the handler produced it, without the Content-Encoding.
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';

const DECODERS: Record<string, (body: Buffer) => Buffer> = {
  gzip: gunzipSync,
  'x-gzip': gunzipSync,
  deflate: inflateSync,
  br: brotliDecompressSync,
};

/**
 * The body and headers to replay to a request that sent `acceptEncoding`: as stored, unless
 * the stored body has a content coding that the request does not accept and that can be
 * undone here (gzip, deflate, br).
 */
export function forAcceptedEncoding(
  body: Buffer,
  headers: Record<string, string>,
  acceptEncoding: string | string[] | undefined,
): { body: Buffer; headers: Record<string, string> } {
  const coding = headers['content-encoding']?.trim().toLowerCase();
  if (!coding || coding === 'identity') return { body, headers };
  const decode = DECODERS[coding];
  if (!decode || accepts(acceptEncoding, coding)) return { body, headers };
  try {
    const decoded = decode(body);
    const rest = { ...headers };
    delete rest['content-encoding'];
    return { body: decoded, headers: rest };
  } catch {
    return { body, headers }; // not what it says it is: sent as stored
  }
}

/**
 * Whether Accept-Encoding lists `coding` (or `*`) with a non-zero weight. No header at all
 * is read as identity only: strictly any coding is then acceptable (RFC 9110), but clients
 * that send none (curl, scripts) seldom decode one.
 */
function accepts(header: string | string[] | undefined, coding: string): boolean {
  if (header === undefined) return false;
  let wildcard = false;
  for (const entry of (Array.isArray(header) ? header.join(',') : header).split(',')) {
    const [name, ...params] = entry.split(';').map((part) => part.trim().toLowerCase());
    const q = params.find((param) => param.startsWith('q='));
    const weight = q === undefined ? 1 : Number(q.slice(2));
    const named = name === coding || (coding === 'x-gzip' && name === 'gzip');
    if (named) return weight > 0;
    if (name === '*') wildcard = weight > 0;
  }
  return wildcard;
}
