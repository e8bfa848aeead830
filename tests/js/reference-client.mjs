// Drives an Evently server with the reference graphql-transport-ws client (npm graphql-ws),
// as a browser app would: a subscription, a query and a mutation over one socket, a document
// that fails validation, keep-alive pings both ways, and a connection_init with a bad token.
// Prints one JSON line with what it saw; tests/api/reference_client.rs checks it.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.env.EVENTLY_WS_URL;
const token = process.env.EVENTLY_TOKEN;
const eventId = process.env.EVENTLY_EVENT_ID;
const seen = { pongs: 0, serverPings: 0, seats: [] };

const deadline = setTimeout(() => {
  console.error('timed out; saw so far:', JSON.stringify(seen));
  process.exit(2);
}, 20000);

function once(client, payload) {
  return new Promise((resolve, reject) => {
    let result;
    client.subscribe(payload, {
      next: (value) => { result = value; },
      error: reject,
      complete: () => resolve(result),
    });
  });
}

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  keepAlive: 200,
  retryAttempts: 0,
  on: {
    ping: (received) => { if (received) seen.serverPings += 1; },
    pong: (received) => { if (received) seen.pongs += 1; },
  },
});

let firstSeats;
const seatsStarted = new Promise((resolve) => { firstSeats = resolve; });
const seatsReached = new Promise((resolve, reject) => {
  client.subscribe(
    {
      query: 'subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }',
      variables: { id: eventId },
    },
    {
      next: ({ data }) => {
        seen.seats.push(data.seatAvailability);
        firstSeats();
        if (data.seatAvailability.version === 2) resolve();
      },
      error: reject,
      complete: () => reject(new Error('the subscription completed')),
    },
  );
});

seen.query = await once(client, {
  query: 'query($id: ID!) { event(id: $id) { title seatsAvailable } }',
  variables: { id: eventId },
});
// The subscription has its first state before anything changes.
await seatsStarted;
seen.mutation = await once(client, {
  query: 'mutation($id: ID!) { bookSeats(input: { eventId: $id, quantity: 2 }) { quantity status } }',
  variables: { id: eventId },
});
await seatsReached;

seen.validation = await once(client, { query: 'subscription { noSuchField }' }).then(
  () => 'accepted',
  (errors) => errors.map((e) => e.extensions?.code),
);

// Keep-alive both ways: the client's pings answered, the server's pings seen.
while (seen.pongs < 1 || seen.serverPings < 1) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
await client.dispose();

const refused = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: 'Bearer forged' },
  retryAttempts: 0,
});
seen.badToken = await once(refused, { query: '{ __typename }' }).then(
  () => 'accepted',
  (event) => ({ code: event.code, reason: event.reason }),
);
await refused.dispose();

clearTimeout(deadline);
console.log(JSON.stringify(seen));
