// Drives two Evently instances sharing Redis with the npm graphql-sse client, in both of its
// modes: a subscriber on instance B (EVENTLY_B_STREAM_URL) must see a booking made through
// instance A (EVENTLY_A_STREAM_URL, a mutation over a distinct-connection event stream).
// Prints one JSON line with what it saw; tests/api/sse.rs checks it.
import { createClient } from 'graphql-sse';

const aUrl = process.env.EVENTLY_A_STREAM_URL;
const bUrl = process.env.EVENTLY_B_STREAM_URL;
const token = process.env.EVENTLY_TOKEN;
const eventId = process.env.EVENTLY_EVENT_ID;
const headers = { Authorization: `Bearer ${token}` };

const SEATS = 'subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }';
const BOOK = 'mutation($input: BookSeatsInput!) { bookSeats(input: $input) { quantity status } }';

const deadline = setTimeout(() => {
  console.error('timed out; saw so far:', JSON.stringify(seen));
  process.exit(2);
}, 30000);

/** Runs one operation to its end and returns its results. */
function results(client, payload) {
  return new Promise((resolve, reject) => {
    const all = [];
    client.subscribe(payload, {
      next: (value) => all.push(value),
      error: (error) => reject(error instanceof Error ? error : new Error(JSON.stringify(error))),
      complete: () => resolve(all),
    });
  });
}

/** Subscribes on B, books `quantity` seats through A once the first update arrives, and
 * returns the updates up to the one showing the booking. */
async function watchABooking(singleConnection, quantity) {
  const subscriber = createClient({ url: bUrl, headers, singleConnection, retryAttempts: 0 });
  const booker = createClient({ url: aUrl, headers, retryAttempts: 0 });
  const seats = [];
  let booked;
  await new Promise((resolve, reject) => {
    const dispose = subscriber.subscribe(
      { query: SEATS, variables: { id: eventId } },
      {
        next: ({ data, errors }) => {
          if (errors) return reject(new Error(JSON.stringify(errors)));
          seats.push(data.seatAvailability);
          if (seats.length === 1) {
            results(booker, { query: BOOK, variables: { input: { eventId, quantity } } })
              .then((value) => { booked = value; })
              .catch(reject);
          } else {
            dispose();
            resolve();
          }
        },
        error: (error) => reject(error instanceof Error ? error : new Error(JSON.stringify(error))),
        complete: () => {},
      },
    );
  });
  const me = await results(subscriber, { query: '{ me { name } }' });
  subscriber.dispose();
  booker.dispose();
  return { seats, booked, me };
}

const seen = {};
seen.distinct = await watchABooking(false, 1);
seen.single = await watchABooking(true, 2);
clearTimeout(deadline);
console.log(JSON.stringify(seen));
