// A tiny loopback HTTP client for tests: raw header arrays (to send a header twice) and the
// body as exact bytes.
import { Agent, request } from 'node:http';

/**
 * Connections are kept alive (requests sent together then arrive together, which the
 * batching tests rely on), but one idle for 1 s is closed. Node's global agent keeps an idle
 * connection until 1 s before the server's keep-alive timeout (5 s), and on a loaded machine
 * a request can still go out on it just as the server closes it: "socket hang up", though
 * the server never read the request (server-restart.e2e-spec.ts met it). Closing idle
 * connections 4 s before the server does leaves that race 4 s of margin instead of 1 s.
 */
const agent = new Agent({ keepAlive: true, timeout: 1_000 });

export interface TestResponse {
  status: number;
  statusMessage?: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json: any;
}

export interface SendOptions {
  method?: string;
  /** Header pairs; a name may repeat. */
  headers?: Array<[string, string]>;
  body?: string | Buffer | object;
}

export function send(
  baseUrl: string,
  path: string,
  options: SendOptions = {},
): Promise<TestResponse> {
  const url = new URL(path, baseUrl);
  const { body } = options;
  const payload =
    body === undefined
      ? undefined
      : typeof body === 'string' || Buffer.isBuffer(body)
        ? body
        : JSON.stringify(body);
  const headers: string[] = ['host', url.host];
  const hasContentType = options.headers?.some(([name]) => name.toLowerCase() === 'content-type');
  if (payload !== undefined && !hasContentType) headers.push('content-type', 'application/json');
  for (const [name, value] of options.headers ?? []) headers.push(name, value);
  // Node sends a flat header array as-is (an object cannot hold a repeated name), without
  // adding Host or framing the body, so both are set here.
  const names = headers.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase());
  const repeated = new Set(names).size !== names.length;
  if (payload !== undefined) {
    headers.push('content-length', String(Buffer.byteLength(payload)));
    names.push('content-length');
  }
  const headerArg = repeated
    ? headers
    : Object.fromEntries(names.map((name, i) => [name, headers[i * 2 + 1]]));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: options.method ?? 'POST',
        headers: headerArg,
        agent,
        timeout: 20_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const buffer = Buffer.concat(chunks);
          const text = buffer.toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            statusMessage: res.statusMessage,
            headers: res.headers,
            body: buffer,
            text,
            json,
          });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout: ${path}`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Runs `count` requests at once. */
export function parallel<T>(count: number, run: (index: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: count }, (_, index) => run(index)));
}
