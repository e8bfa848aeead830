// Reads whole seat maps with the reference graphql-transport-ws client (npm graphql-ws), as a
// seat picker does: for each event of EVENTLY_EVENT_IDS (comma-separated), subscribes to
// `seatMap`, takes the first (full) message and unsubscribes, all over one connection.
// Prints one JSON line: per event the number of seats received (or the error), and how many
// times the client connected. tests/api/seats.rs checks it.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.env.EVENTLY_WS_URL;
const eventIds = process.env.EVENTLY_EVENT_IDS.split(',');
const seen = { maps: [], connections: 0 };

const deadline = setTimeout(() => {
  console.error('timed out; saw so far:', JSON.stringify(seen));
  process.exit(2);
}, 50000);

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  retryAttempts: 0,
  // One connection for the whole page, not one per subscription.
  lazy: false,
  on: { connected: () => { seen.connections += 1; } },
});

function firstMap(id) {
  return new Promise((resolve) => {
    const unsubscribe = client.subscribe(
      {
        query: 'subscription($id: ID!) { seatMap(eventId: $id) { version full seats { id state } } }',
        variables: { id },
      },
      {
        next: ({ data, errors }) => {
          unsubscribe();
          resolve(errors ? { errors } : { full: data.seatMap.full, seats: data.seatMap.seats.length });
        },
        error: (error) => resolve({ error: error.code ? `closed ${error.code} ${error.reason}` : String(error) }),
        complete: () => resolve({ error: 'completed before the first message' }),
      },
    );
  });
}

for (const id of eventIds) {
  seen.maps.push(await firstMap(id));
}
await client.dispose();
clearTimeout(deadline);
console.log(JSON.stringify(seen));
