// The example application: bookings, the confirmation sender that consumes their
// `booking.created` events, and IdempotencyModule, sharing one DataSource.
import { Module, type DynamicModule } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { IdempotencyModule } from '../src/index.js';
import { BookingsController } from './bookings/bookings.controller.js';
import { BookingsService } from './bookings/bookings.service.js';
import { ConfirmationSender, DeliveryLog } from './confirmations/confirmation-sender.controller.js';
import { BookingEvents } from './events/booking-events.js';
import { IdempotencyMetrics, MetricsController } from './metrics/metrics.controller.js';

@Module({})
export class AppModule {
  /** `dataSource` is opened and migrated by the caller (see openBookingsDataSource). */
  static register(dataSource: DataSource): DynamicModule {
    return {
      module: AppModule,
      imports: [
        IdempotencyModule.forRoot({
          dataSource,
          // The migrations already ran on the DataSource; nothing to create here.
          runMigrations: false,
          // The default scope is request.user.id, which PartnerAuthGuard sets to the partner:
          // two partners using the same key never see each other's bookings.
          retryAfterSeconds: 1,
        }),
      ],
      controllers: [BookingsController, ConfirmationSender, MetricsController],
      providers: [
        BookingsService,
        IdempotencyMetrics,
        BookingEvents,
        DeliveryLog,
        { provide: DataSource, useValue: dataSource },
      ],
    };
  }
}
