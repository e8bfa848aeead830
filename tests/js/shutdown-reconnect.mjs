// A graphql-ws client (npm graphql-ws) watching an event's seats on instance A
// (EVENTLY_A_WS_URL) while A shuts down: it must be told 1012 (service restart), reconnect on
// its own to instance B (EVENTLY_B_WS_URL, as a load balancer would send it) and be told the
// seat count as it is now. Writes EVENTLY_READY_FILE once the first count arrives, so the test
// knows when to book on B and stop A. Prints one JSON line with what it saw;
// tests/api/shutdown.rs checks it.
import { writeFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const urls = [process.env.EVENTLY_A_WS_URL, process.env.EVENTLY_B_WS_URL];
const eventId = process.env.EVENTLY_EVENT_ID;
const readyFile = process.env.EVENTLY_READY_FILE;
const expected = Number(process.env.EVENTLY_EXPECTED_SEATS);
const seen = { connectedTo: [], closeCodes: [], seats: [] };

const deadline = setTimeout(() => {
  console.error('timed out; saw so far:', JSON.stringify(seen));
  process.exit(2);
}, 30000);

let closes = 0;
const client = createClient({
  // After the first close, wherever the load balancer would send it: B.
  url: () => urls[Math.min(closes, 1)],
  webSocketImpl: WebSocket,
  retryAttempts: 3,
  retryWait: async () => {},
  on: {
    connected: (socket) => seen.connectedTo.push(socket.url),
    closed: (event) => {
      closes += 1;
      seen.closeCodes.push(event.code);
    },
  },
});

await new Promise((resolve, reject) => {
  client.subscribe(
    {
      query: 'subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable } }',
      variables: { id: eventId },
    },
    {
      next: ({ data }) => {
        const seats = data.seatAvailability.seatsAvailable;
        seen.seats.push(seats);
        if (seen.seats.length === 1) writeFileSync(readyFile, 'subscribed');
        if (closes > 0 && seats === expected) resolve();
      },
      error: (error) => reject(error instanceof Error ? error : new Error(JSON.stringify(error))),
      complete: () => reject(new Error('the subscription completed instead of resuming')),
    },
  );
});

clearTimeout(deadline);
await client.dispose();
console.log(JSON.stringify(seen));
