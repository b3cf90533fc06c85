// A loopback TCP proxy for outage tests: forwards 127.0.0.1:<port> to a target host:port.
// close() stops listening and destroys every open connection (both sides), as if the
// database went away; open() listens again on the same port. pause() freezes it, as if the
// database process were stopped (SIGSTOP): connections stay open and new ones are accepted,
// but nothing is read or forwarded, so what was sent waits (in the kernel's buffers) and
// reaches the database, in order, on resume(), even from a client that gave up meanwhile.
// mute() silently drops what the server sends on some connections, as a network that loses
// packets would.
import { createServer, connect, type Server, type Socket } from 'node:net';

export class TcpProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  /** Linked pairs, to stop and restart forwarding. */
  private readonly links = new Set<[client: Socket, upstream: Socket]>();
  /** Clients accepted while paused, linked on resume. */
  private readonly held: Socket[] = [];
  private paused = false;
  /** The first bytes each client sent (Postgres: its startup message, application_name). */
  private readonly startups = new Map<Socket, string>();
  private readonly mutes = new Set<string>();
  private readonly muted = new WeakSet<Socket>();
  /** Milliseconds each new connection waits before it is forwarded (see delayNew). */
  private newDelayMs = 0;
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
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      if (this.paused) {
        client.pause();
        client.on('error', () => client.destroy());
        this.held.push(client);
      } else if (this.newDelayMs > 0) {
        client.pause();
        client.on('error', () => client.destroy());
        setTimeout(() => !client.destroyed && this.link(client), this.newDelayMs);
      } else {
        this.link(client);
      }
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

  /** Stops forwarding, keeping every connection open (a frozen database). */
  pause(): void {
    this.paused = true;
    for (const [client, upstream] of this.links) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  /**
   * From now on forwards each new connection only `ms` after it arrives (0: at once), while
   * open ones carry on: a slow network path for, say, Postgres's cancel requests, which each
   * come on a connection of their own.
   */
  delayNew(ms: number): void {
    this.newDelayMs = ms;
  }

  /** Forwards again whatever waited, then carries on. */
  resume(): void {
    this.paused = false;
    for (const [client, upstream] of this.links) {
      client.pipe(upstream);
      if (this.muted.has(client)) upstream.resume();
      else upstream.pipe(client);
    }
    for (const client of this.held.splice(0)) this.link(client);
  }

  /**
   * From now on drops everything the server sends on connections, open or to come, whose
   * startup message contains `match` (e.g. an application_name), without closing them: the
   * client keeps waiting, unaware. Returns how many open connections it muted.
   */
  mute(match: string): number {
    this.mutes.add(match);
    let muted = 0;
    for (const pair of this.links) {
      if (this.startups.get(pair[0])?.includes(match) && this.silence(pair)) muted++;
    }
    return muted;
  }

  /** Stops forwarding the server's bytes to the client; false if already muted. */
  private silence([client, upstream]: [Socket, Socket]): boolean {
    if (this.muted.has(client)) return false;
    this.muted.add(client);
    upstream.unpipe(client);
    upstream.on('data', () => undefined);
    return true;
  }

  private link(client: Socket): void {
    const upstream = connect(this.targetPort, this.targetHost);
    const pair: [Socket, Socket] = [client, upstream];
    this.links.add(pair);
    this.sockets.add(upstream);
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      this.links.delete(pair);
      client.destroy();
    });
    upstream.on('error', () => upstream.destroy());
    // What a client sent still reaches the database after the client left, as it would from
    // the kernel's buffers of a stopped server: its departure only half-closes the upstream
    // side, once what it sent is forwarded (pipe ends it), and answers nobody reads are
    // discarded.
    client.on('error', () => client.destroy());
    client.on('close', () => {
      upstream.end();
      upstream.resume();
    });
    this.startups.set(client, '');
    client.on('data', (chunk: Buffer) => {
      const startup = this.startups.get(client);
      if (startup === undefined || startup.length >= 1024) return;
      this.startups.set(client, startup + chunk.toString('latin1'));
      for (const match of this.mutes) {
        if (this.startups.get(client)!.includes(match)) this.silence(pair);
      }
    });
    client.once('close', () => this.startups.delete(client));
    client.pipe(upstream);
    upstream.pipe(client);
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
    this.links.clear();
    this.held.length = 0;
    this.paused = false;
    this.newDelayMs = 0;
    this.mutes.clear();
    await closed;
  }

  /** Open connections right now (client and upstream sides counted separately). */
  get openSockets(): number {
    return this.sockets.size;
  }
}
