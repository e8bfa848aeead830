#!/usr/bin/env python3
"""Drives a server running under `valgrind --tool=callgrind` with a fixed number of requests per
phase, one keep-alive connection, one request at a time, and has callgrind dump its counts after
each phase (`callgrind_control`), so each dump's instructions divided by the phase's requests is
the server's CPU cost of one request, whatever else the machine is doing. Run by
`scripts/callgrind.sh`, which starts the server; see it for the phases.

Usage: callgrind_requests.py URL SERVER_PID REQUESTS
"""

import http.client
import json
import subprocess
import sys
import time
import urllib.parse
import uuid

# The bench's browse documents (bench/src/scenarios/browse.rs), word for word.
EVENTS = ("query Browse { events(first: 20) { edges { node { id title venue category startsAt "
          "capacity seatsAvailable organizer { id name } } } pageInfo { hasNextPage endCursor } } }")
EVENT = ("query Event($id: ID!) { event(id: $id) { id title description venue startsAt endsAt "
         "capacity seatsAvailable maxPerBooking status organizer { id name } } }")
SIGNED_IN_EVENTS = ("query Browse { me { id name } events(first: 20) { edges { node { id title venue "
                    "category startsAt capacity seatsAvailable organizer { id name } } } pageInfo "
                    "{ hasNextPage endCursor } } }")
SIGNED_IN_EVENT = ("query Event($id: ID!) { me { id name } event(id: $id) { id title description venue "
                   "startsAt endsAt capacity seatsAvailable maxPerBooking status organizer { id name } } }")
# The onsale bench's booking (bench/src/client.rs).
BOOK = "mutation($input: BookSeatsInput!) { bookSeats(input: $input) { id quantity } }"


class Client:
    def __init__(self, url):
        parsed = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)

    def call(self, query, variables=None, token=None):
        body = json.dumps({"query": query, "variables": variables or {}})
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.conn.request("POST", "/graphql", body, headers)
        answer = self.conn.getresponse()
        data = answer.read()
        return json.loads(data)

    def ok(self, query, variables=None, token=None):
        answer = self.call(query, variables, token)
        if answer.get("errors"):
            raise SystemExit(f"set-up call failed: {answer['errors']}\n{query}")
        return answer["data"]


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL)


def main():
    url, pid, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    gql = Client(url)
    login = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }"
    organizer = gql.ok(login, {"input": {"email": "organizer@evently.test",
                                          "password": "organizer-demo-pass"}})["login"]["accessToken"]
    buyer = gql.ok(login, {"input": {"email": "user@evently.test",
                                      "password": "user-demo-pass"}})["login"]["accessToken"]
    ids = [e["node"]["id"] for e in gql.ok(EVENTS)["events"]["edges"]]

    # A sold-out event: one seat, booked.
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400 + 3 * 3600))
    sold_out = gql.ok("mutation($input: CreateEventInput!) { createEvent(input: $input) { id } }",
                      {"input": {"title": "Sold out", "category": "Benchmark", "venue": "Loopback",
                                 "startsAt": starts, "endsAt": ends, "capacity": 1,
                                 "maxPerBooking": 1}}, organizer)["createEvent"]["id"]
    gql.ok(BOOK, {"input": {"eventId": sold_out, "quantity": 1}}, buyer)

    def book():
        key = str(uuid.uuid4())
        answer = gql.call(BOOK, {"input": {"eventId": sold_out, "quantity": 1,
                                           "idempotencyKey": key}}, buyer)
        code = (answer.get("errors") or [{}])[0].get("extensions", {}).get("code")
        if code != "SOLD_OUT":
            raise SystemExit(f"expected SOLD_OUT, got {answer}")

    phases = [
        ("browse-anonymous", lambda i: gql.ok(EVENTS) if i % 2 == 0
         else gql.ok(EVENT, {"id": ids[i % len(ids)]})),
        ("browse-signed-in", lambda i: gql.ok(SIGNED_IN_EVENTS, None, buyer) if i % 2 == 0
         else gql.ok(SIGNED_IN_EVENT, {"id": ids[i % len(ids)]}, buyer)),
        ("events-list-anonymous", lambda i: gql.ok(EVENTS)),
        ("sold-out", lambda i: book()),
    ]
    for name, request in phases:
        for i in range(min(50, requests)):  # warm: caches, prepared statements, pool
            request(i)
        control(pid, "--zero")
        for i in range(requests):
            request(i)
        control(pid, f"--dump={name}")
        print(f"{name}: {requests} requests", flush=True)


if __name__ == "__main__":
    main()
