// Where the module's log lines go: Nest's Logger (context 'Idempotency') by default, the
// application's LoggerService when the `logger` option gives one, nowhere with `logger: false`.
// Debug lines (one per outcome) are only built when they can be printed.
import { Logger, type LoggerService } from '@nestjs/common';

const CONTEXT = 'Idempotency';

export class IdempotencyLog {
  private readonly target: LoggerService | undefined;
  private readonly custom: boolean;

  constructor(logger?: LoggerService | false) {
    this.custom = logger !== undefined && logger !== false;
    this.target = logger === false ? undefined : (logger ?? new Logger(CONTEXT));
  }

  /**
   * Whether a debug line would be printed. Nest's Logger says so (the application's
   * `logLevels`); an application's own LoggerService filters for itself, so it gets them all.
   */
  get debugEnabled(): boolean {
    if (!this.target?.debug) return false;
    return this.custom || Logger.isLevelEnabled('debug');
  }

  debug(message: string): void {
    if (this.debugEnabled) this.write('debug', message);
  }

  log(message: string): void {
    this.write('log', message);
  }

  warn(message: string): void {
    this.write('warn', message);
  }

  error(message: string): void {
    this.write('error', message);
  }

  private write(level: 'debug' | 'log' | 'warn' | 'error', message: string): void {
    // A log line is never worth a request: a logger that throws (a full disk, a closed
    // transport) must not fail the call it describes, or leave its key claimed.
    try {
      // Nest's convention: an application's LoggerService takes the context as the last argument.
      if (this.custom) this.target![level]?.(message, CONTEXT);
      else this.target?.[level]?.(message);
    } catch {
      // Nowhere better to say so than the logger that just failed.
    }
  }
}
