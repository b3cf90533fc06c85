// GET /metrics: the idempotency counters in Prometheus' text format, recorded by the recipe
// in idempotency-prometheus.ts. Each app has its own registry, so the tests can start several
// apps in one process. Unauthenticated, as scrape endpoints usually are: the example listens
// on loopback only.
import {
  Controller,
  Get,
  Header,
  Injectable,
  type OnModuleDestroy,
  type OnModuleInit,
} from '@nestjs/common';
import { prometheusContentType, Registry } from 'prom-client';
import type { Subscription } from 'rxjs';
import { IdempotencyEvents } from '../../src/index.js';
import { recordIdempotencyMetrics } from './idempotency-prometheus.js';

@Injectable()
export class IdempotencyMetrics implements OnModuleInit, OnModuleDestroy {
  readonly registry = new Registry();
  private subscription?: Subscription;

  constructor(private readonly events: IdempotencyEvents) {}

  onModuleInit(): void {
    this.subscription = recordIdempotencyMetrics(this.events, [this.registry]);
  }

  onModuleDestroy(): void {
    this.subscription?.unsubscribe();
  }
}

@Controller('metrics')
export class MetricsController {
  constructor(private readonly metrics: IdempotencyMetrics) {}

  @Get()
  @Header('Content-Type', prometheusContentType)
  scrape(): Promise<string> {
    return this.metrics.registry.metrics();
  }
}
