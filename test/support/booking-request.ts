// A valid body for the example's instant-booking route (InstantBookingDto), at a given price.
export const bookingRequest = (price: number) => ({
  currency: 'EUR',
  policyholder: {
    first_name: 'Ada',
    last_name: 'Lovelace',
    email: 'ada@example.com',
    country: 'GB',
  },
  quotes: [{ policy_type: 'travel', policy_start_date: '2027-01-15', price }],
});
