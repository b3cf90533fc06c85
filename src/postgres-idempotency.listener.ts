// The one Postgres connection per process that LISTENs for records settling, so duplicates
// waiting for them (`waitInFlightMs`) wake the moment any instance completes or releases one.
// Dedicated, not taken from the pool: LISTEN lasts as long as its session, and a waiter must
// never hold a pool connection while it waits. Opened by the first wait, so an application
// that never waits never opens it.
import { Logger, type LoggerService } from '@nestjs/common';
import type { DataSource } from 'typeorm';

/** After a failed connection attempt, waits poll instead of reconnecting for this long. */
const RECONNECT_AFTER_MS = 1_000;
/** Connecting and LISTEN must finish within this; a stalled connection is abandoned. */
const SETUP_TIMEOUT_MS = 5_000;
/** Postgres keeps the first 63 bytes of application_name. */
const MAX_APPLICATION_NAME = 63;

/** The parts of a pg Client the listener uses. */
export interface ListenerClient {
  connect(): Promise<unknown>;
  query(text: string): Promise<unknown>;
  end(): Promise<unknown>;
  on(
    event: 'notification',
    listener: (message: { channel: string; payload?: string }) => void,
  ): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  on(event: 'end', listener: () => void): unknown;
}

/** The connection settings of a pg Pool, as the listener reads them. */
interface PoolOptions {
  application_name?: string;
  [setting: string]: unknown;
}

export class PostgresIdempotencyListener {
  private client?: ListenerClient;
  private connecting?: Promise<ListenerClient>;
  /** Channels LISTENed on the current connection (or being). */
  private readonly channels = new Map<string, Promise<unknown>>();
  /** Wake-up calls by channel and payload. */
  private readonly subscribers = new Map<string, Set<() => void>>();
  private reconnectAt = 0;
  private closed = false;

  /**
   * @param createClient makes a new, unconnected pg Client, each time the listener
   *   (re)connects. Name its `application_name` with listenerApplicationName(), so each
   *   process's listener can be told apart in `pg_stat_activity`.
   * @example
   * new PostgresIdempotencyListener(
   *   () => new pg.Client({ connectionString: url, application_name: listenerApplicationName('billing') }),
   * )
   */
  constructor(
    private readonly createClient: () => ListenerClient,
    /** Where it warns about a lost connection. @default new Logger('Idempotency') */
    private readonly logger: Pick<LoggerService, 'warn'> = new Logger('Idempotency'),
  ) {}

  /**
   * A listener on the same database, as the same user, as a TypeORM Postgres DataSource's
   * pool (read when it first connects, so the DataSource may still be initializing now).
   */
  static forDataSource(
    dataSource: DataSource,
    logger?: Pick<LoggerService, 'warn'>,
  ): PostgresIdempotencyListener {
    return new PostgresIdempotencyListener(() => {
      const driver = dataSource.driver as {
        postgres?: { Client: new (settings: PoolOptions) => ListenerClient };
        master?: { options?: PoolOptions };
      };
      const options = driver.master?.options;
      if (!driver.postgres || !options) throw new Error('The DataSource is not initialized.');
      return new driver.postgres.Client({
        ...options,
        application_name: listenerApplicationName(options.application_name),
        keepAlive: true,
      });
    }, logger);
  }

  /**
   * Calls `wake` on every notification on `channel` carrying `payload`, and when the
   * connection is lost (a notification may have been missed then). Resolves, with the
   * function that stops it, once LISTEN is active; rejects when it cannot be.
   */
  async subscribe(channel: string, payload: string, wake: () => void): Promise<() => void> {
    if (this.closed) throw new Error('The idempotency listener is closed.');
    const id = `${channel}\n${payload}`;
    let wakes = this.subscribers.get(id);
    if (!wakes) this.subscribers.set(id, (wakes = new Set()));
    wakes.add(wake);
    const unsubscribe = () => {
      wakes.delete(wake);
      if (wakes.size === 0 && this.subscribers.get(id) === wakes) this.subscribers.delete(id);
    };
    try {
      await this.listen(channel);
    } catch (error) {
      unsubscribe();
      throw error;
    }
    return unsubscribe;
  }

  /** Closes the connection; waits in progress wake up and poll from then on. */
  async close(): Promise<void> {
    this.closed = true;
    // A connection still being opened closes itself once open (or abandons itself).
    const client = this.client;
    this.client = undefined;
    this.channels.clear();
    this.wakeAll();
    if (client) await withTimeout(client.end(), 'closing').catch(() => destroy(client));
  }

  /** Nest calls this on the instance the module provides. */
  onApplicationShutdown(): Promise<void> {
    return this.close();
  }

  private listen(channel: string): Promise<unknown> {
    let listening = this.channels.get(channel);
    if (!listening) {
      listening = this.connect().then((client) =>
        withTimeout(client.query(`LISTEN "${channel}"`), 'LISTEN').catch((error: Error) => {
          this.abandon(client, error);
          throw error;
        }),
      );
      this.channels.set(channel, listening);
      const current = listening;
      current.catch(() => {
        if (this.channels.get(channel) === current) this.channels.delete(channel);
      });
    }
    return listening;
  }

  private connect(): Promise<ListenerClient> {
    if (this.client) return Promise.resolve(this.client);
    if (this.connecting) return this.connecting;
    if (Date.now() < this.reconnectAt) {
      return Promise.reject(new Error('The idempotency listener could not connect recently.'));
    }
    let client: ListenerClient;
    try {
      client = this.createClient();
    } catch (error) {
      return Promise.reject(error);
    }
    // Attached before connecting: an 'error' without a listener would crash the process.
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client));
    client.on('notification', ({ channel, payload }) => this.dispatch(channel, payload ?? ''));
    const connecting = withTimeout(client.connect(), 'connecting').then(
      async () => {
        if (this.closed) {
          await client.end().catch(() => undefined);
          throw new Error('The idempotency listener is closed.');
        }
        this.client = client;
        return client;
      },
      async (error: unknown) => {
        this.reconnectAt = Date.now() + RECONNECT_AFTER_MS;
        this.logger.warn(
          `The idempotency listener could not connect; waiting duplicates poll every second meanwhile: ${error instanceof Error ? error.message : String(error)}`,
        );
        this.abandon(client);
        throw error;
      },
    );
    this.connecting = connecting;
    const settled = () => {
      if (this.connecting === connecting) this.connecting = undefined;
    };
    connecting.then(settled, settled);
    return connecting;
  }

  private dispatch(channel: string, payload: string): void {
    const wakes = this.subscribers.get(`${channel}\n${payload}`);
    if (wakes) for (const wake of [...wakes]) wake();
  }

  /**
   * The connection died (the server restarted, a proxy cut it, someone terminated it): the
   * next wait opens a new one. Everyone waiting now wakes and claims again, since what
   * they waited for may have happened while nobody listened.
   */
  private lost(client: ListenerClient, error?: Error): void {
    if (this.client !== client) return;
    this.client = undefined;
    this.channels.clear();
    if (!this.closed) {
      this.logger.warn(
        `The idempotency listener lost its connection${error ? ` (${error.message})` : ''}; waiting duplicates claim again and it reconnects on the next wait.`,
      );
    }
    this.wakeAll();
  }

  /** Gives up on a connection that failed or stalled. */
  private abandon(client: ListenerClient, error?: Error): void {
    this.lost(client, error);
    void client.end().catch(() => undefined);
    (
      client as unknown as { connection?: { stream?: { destroy(): void } } }
    ).connection?.stream?.destroy();
  }

  private wakeAll(): void {
    for (const wakes of [...this.subscribers.values()]) for (const wake of [...wakes]) wake();
  }
}

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`The idempotency listener timed out ${what}.`)),
      SETUP_TIMEOUT_MS,
    ).unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A stalled socket never answers end(), and pg has no public way to drop one. */
function destroy(client: ListenerClient): void {
  (
    client as unknown as { connection?: { stream?: { destroy(): void } } }
  ).connection?.stream?.destroy();
}

/** `<base>:listen:<pid>`, the application_name of this process's listening connection. */
export function listenerApplicationName(base = 'nest-idempotency'): string {
  const suffix = `:listen:${process.pid}`;
  return base.slice(0, MAX_APPLICATION_NAME - suffix.length) + suffix;
}
