// A booking as stored in the example's `bookings` table (created by CreateBookings).
import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

export interface Policyholder {
  first_name: string;
  last_name: string;
  email: string;
  country: string;
}

export interface Quote {
  policy_type: string;
  policy_start_date: string;
  price: number;
}

@Entity({ name: 'bookings' })
export class Booking {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ name: 'partner_id', type: 'text' })
  partnerId!: string;

  @Column({ type: 'text' })
  status!: 'CONFIRMED';

  @Column({ type: 'char', length: 3 })
  currency!: string;

  // numeric comes back from pg as a string; the API speaks numbers.
  @Column({
    name: 'total_price',
    type: 'numeric',
    precision: 12,
    scale: 2,
    transformer: { to: (value: number) => value, from: (value: string) => Number(value) },
  })
  totalPrice!: number;

  @Column({ type: 'jsonb' })
  policyholder!: Policyholder;

  @Column({ type: 'jsonb' })
  quotes!: Quote[];

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

/** The booking as the API returns it. */
export function toBookingResponse(booking: Booking) {
  return {
    id: booking.id,
    partner_id: booking.partnerId,
    status: booking.status,
    currency: booking.currency,
    total_price: booking.totalPrice,
    policyholder: booking.policyholder,
    quotes: booking.quotes,
    created_at: booking.createdAt.toISOString(),
  };
}

export type BookingResponse = ReturnType<typeof toBookingResponse>;
