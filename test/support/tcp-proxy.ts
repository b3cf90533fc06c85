// A loopback TCP proxy for outage tests: forwards 127.0.0.1:<port> to a target host:port.
// close() stops listening and destroys every open connection (both sides), as if the
// database went away; open() listens again on the same port.
import { createServer, connect, type Server, type Socket } from 'node:net';

export class TcpProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  /** Connections accepted since creation. */
  accepted = 0;
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  /** A proxy in front of the Postgres of a URL; `url` returns the URL through the proxy. */
  static forUrl(databaseUrl: string): TcpProxy {
    const { hostname, port } = new URL(databaseUrl);
    return new TcpProxy(hostname || '127.0.0.1', Number(port || 5432));
  }

  /** `databaseUrl` with its host and port replaced by the proxy's. */
  url(databaseUrl: string): string {
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  get listening(): boolean {
    return this.server?.listening ?? false;
  }

  /** Listens on `this.port` (any free port the first time). */
  open(): Promise<void> {
    const server = createServer((client) => {
      this.accepted++;
      const upstream = connect(this.targetPort, this.targetHost);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        this.port = (server.address() as { port: number }).port;
        resolve();
      });
    });
  }

  /** Stops listening and cuts every open connection. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const closed = server
      ? new Promise<void>((resolve) => server.close(() => resolve()))
      : Promise.resolve();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
  }

  /** Open connections right now (client and upstream sides counted separately). */
  get openSockets(): number {
    return this.sockets.size;
  }
}
