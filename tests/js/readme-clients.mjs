// The client configurations the README gives, run against a real Evently: Apollo Client
// (persisted queries by GET, subscriptions over graphql-ws), urql (GET queries, subscriptions
// over graphql-sse) and plain fetch. Every HTTP request is recorded (method, status,
// Cache-Control) so tests/api/readme_clients.rs can check the wire, not only the data.
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { Client as UrqlClient, cacheExchange, fetchExchange, subscriptionExchange } from '@urql/core';
import { createHash } from 'node:crypto';
import { createClient as createSseClient } from 'graphql-sse';
import { createClient as createWsClient } from 'graphql-ws';
import WebSocket from 'ws';

const base = process.env.EVENTLY_URL; // http://host:port
const token = process.env.EVENTLY_TOKEN;
const eventId = process.env.EVENTLY_EVENT_ID;
const seen = { requests: [] };

const deadline = setTimeout(() => {
  console.error('timed out; saw so far:', JSON.stringify(seen));
  process.exit(2);
}, 30000);

/** fetch, recording what went over the wire. */
async function recordingFetch(input, init = {}) {
  const response = await fetch(input, init);
  seen.requests.push({
    client: recordingFetch.client,
    method: init.method ?? 'GET',
    status: response.status,
    cacheControl: response.headers.get('cache-control'),
  });
  return response;
}

const EVENTS = 'query Events { events(first: 5) { edges { node { id title seatsAvailable } } } }';
const SEATS = 'subscription Seats($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable } }';
const BOOK = 'mutation Book($input: BookSeatsInput!) { bookSeats(input: $input) { quantity status } }';

// --- Apollo Client ----------------------------------------------------------------------
function apolloClient() {
  const http = new PersistedQueryLink({
    sha256: (text) => createHash('sha256').update(text).digest('hex'),
    useGETForHashedQueries: true,
  }).concat(new HttpLink({
    uri: `${base}/graphql`,
    headers: { authorization: `Bearer ${token}` },
    fetch: recordingFetch,
  }));
  const ws = new GraphQLWsLink(createWsClient({
    url: `${base.replace(/^http/, 'ws')}/graphql/ws`,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${token}` },
  }));
  const link = ApolloLink.split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
    },
    ws,
    http,
  );
  return { client: new ApolloClient({ link, cache: new InMemoryCache() }), ws };
}

/** Anonymous Apollo Client for the public catalogue: hashed GETs a CDN can keep. */
function anonymousApolloClient() {
  const link = new PersistedQueryLink({
    sha256: (text) => createHash('sha256').update(text).digest('hex'),
    useGETForHashedQueries: true,
  }).concat(new HttpLink({ uri: `${base}/graphql`, fetch: recordingFetch }));
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

recordingFetch.client = 'apollo';
const anonymous = anonymousApolloClient();
seen.apolloFirst = (await anonymous.query({ query: gql(EVENTS) })).data.events.edges.length;
const again = anonymousApolloClient();
seen.apolloAgain = (await again.query({ query: gql(EVENTS) })).data.events.edges.length;

const apollo = apolloClient();
let booked;
seen.apolloSeats = await new Promise((resolve, reject) => {
  const counts = [];
  const subscription = apollo.client
    .subscribe({ query: gql(SEATS), variables: { id: eventId } })
    .subscribe({
      next: ({ data }) => {
        counts.push(data.seatAvailability.seatsAvailable);
        if (counts.length === 1) {
          // Answered before the next client starts, so its request is recorded as Apollo's
          // even when the new seat count arrives over the socket first.
          booked = apollo.client
            .mutate({ mutation: gql(BOOK), variables: { input: { eventId, quantity: 1 } } })
            .then(({ data }) => { seen.apolloBooked = data.bookSeats; });
          booked.catch(reject);
        } else {
          subscription.unsubscribe();
          resolve(counts);
        }
      },
      error: reject,
    });
});
await booked;
await apollo.ws.client.dispose();

// --- urql -------------------------------------------------------------------------------
recordingFetch.client = 'urql';
const sse = createSseClient({
  url: `${base}/graphql/stream`,
  headers: { Authorization: `Bearer ${token}` },
});
const urql = new UrqlClient({
  url: `${base}/graphql`,
  preferGetMethod: 'within-url-limit',
  fetch: recordingFetch,
  fetchOptions: () => ({ headers: { authorization: `Bearer ${token}` } }),
  exchanges: [
    cacheExchange,
    fetchExchange,
    subscriptionExchange({
      forwardSubscription(request) {
        const input = { ...request, query: request.query || '' };
        return {
          subscribe(sink) {
            const unsubscribe = sse.subscribe(input, sink);
            return { unsubscribe };
          },
        };
      },
    }),
  ],
});
const urqlEvents = await urql.query(EVENTS, {}).toPromise();
if (urqlEvents.error) throw urqlEvents.error;
seen.urqlEvents = urqlEvents.data.events.edges.length;
seen.urqlSeats = await new Promise((resolve, reject) => {
  const { unsubscribe } = urql.subscription(SEATS, { id: eventId }).subscribe((result) => {
    if (result.error) return reject(result.error);
    unsubscribe();
    resolve(result.data.seatAvailability.seatsAvailable);
  });
});
sse.dispose();

// --- plain fetch ------------------------------------------------------------------------
recordingFetch.client = 'fetch';
const url = new URL(`${base}/graphql`);
url.searchParams.set('query', EVENTS);
const viaGet = await recordingFetch(url, { headers: { accept: 'application/graphql-response+json' } });
seen.fetchGet = { contentType: viaGet.headers.get('content-type'), body: await viaGet.json() };
const viaPost = await recordingFetch(`${base}/graphql`, {
  method: 'POST',
  headers: {
    'content-type': 'application/json',
    accept: 'application/graphql-response+json, application/json;q=0.9',
    authorization: `Bearer ${token}`,
  },
  body: JSON.stringify({ query: '{ me { name } }' }),
});
seen.fetchPost = await viaPost.json();

clearTimeout(deadline);
console.log(JSON.stringify(seen));
