// The Evently dashboard: sign in, pick an event, watch its figures and hourly sales move as
// `eventStatsUpdated` arrives. No dependencies: a small graphql-transport-ws client and a
// canvas chart drawn by hand, all served by the Evently binary itself.
"use strict";

const state = { token: null, socket: null, eventId: null, buckets: [] };
const $ = (id) => document.getElementById(id);
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

async function graphql(query, variables) {
  const headers = { "content-type": "application/json" };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  const response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json();
  if (body.errors) throw new Error(body.errors.map((e) => e.message).join("; "));
  return body.data;
}

const STATS_FIELDS = "sold held available capacity utilisation bookings cancellations waitlistLength version";

function showStats(stats) {
  $("sold").textContent = stats.sold;
  $("held").textContent = stats.held;
  $("available").textContent = stats.available;
  $("capacity").textContent = stats.capacity;
  $("utilisation").textContent = `${(stats.utilisation * 100).toFixed(1)} %`;
  $("bookings").textContent = stats.bookings;
  $("cancellations").textContent = stats.cancellations;
  $("waitlist").textContent = stats.waitlistLength;
}

async function loadSales() {
  const to = new Date(Date.now() + 3600 * 1000);
  const from = new Date(to.getTime() - 24 * 3600 * 1000);
  const data = await graphql(
    `query($id: ID!, $from: DateTime!, $to: DateTime!, $tz: String!) {
      salesOverTime(eventId: $id, interval: HOUR, from: $from, to: $to, timeZone: $tz) { start netTickets } }`,
    { id: state.eventId, from: from.toISOString(), to: to.toISOString(), tz: zone },
  );
  state.buckets = data.salesOverTime;
  drawChart();
}

// Bars of net tickets per local hour, with the hour under every fourth bar.
function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const buckets = state.buckets;
  const max = Math.max(1, ...buckets.map((b) => b.netTickets));
  const slot = width / Math.max(1, buckets.length);
  const base = height - 24;
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = "#667";
  ctx.fillText(String(max), 4, 14);
  buckets.forEach((bucket, i) => {
    const h = Math.max(0, bucket.netTickets) / max * (base - 20);
    ctx.fillStyle = "#3a6df0";
    ctx.fillRect(i * slot + 2, base - h, slot - 4, h);
    if (i % 4 === 0) {
      const hour = new Date(bucket.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", timeZone: zone });
      ctx.fillStyle = "#667";
      ctx.fillText(hour, i * slot + 2, height - 6);
    }
  });
  ctx.strokeStyle = "#99a";
  ctx.beginPath();
  ctx.moveTo(0, base + 0.5);
  ctx.lineTo(width, base + 0.5);
  ctx.stroke();
  canvas.dataset.total = String(buckets.reduce((sum, b) => sum + b.netTickets, 0));
}

// graphql-transport-ws: connection_init with the token, then one subscription.
function watch(eventId) {
  if (state.socket) state.socket.close(1000);
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/graphql/ws`;
  const socket = new WebSocket(url, "graphql-transport-ws");
  state.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${state.token}` } }));
  socket.onmessage = async (message) => {
    const msg = JSON.parse(message.data);
    if (msg.type === "ping") socket.send(JSON.stringify({ type: "pong" }));
    if (msg.type === "connection_ack") {
      socket.send(JSON.stringify({
        id: "stats", type: "subscribe",
        payload: { query: `subscription($id: ID!) { eventStatsUpdated(eventId: $id) { ${STATS_FIELDS} } }`, variables: { id: eventId } },
      }));
      $("status").textContent = "live";
    }
    if (msg.type === "next" && state.eventId === eventId) {
      if (msg.payload.errors) { $("status").textContent = msg.payload.errors[0].message; return; }
      showStats(msg.payload.data.eventStatsUpdated);
      await loadSales();
    }
    if (msg.type === "error") $("status").textContent = msg.payload[0]?.message ?? "error";
  };
  socket.onclose = (event) => { if (state.socket === socket) $("status").textContent = `disconnected (${event.code})`; };
}

async function chooseEvent(eventId) {
  state.eventId = eventId || null;
  if (!eventId) return;
  const data = await graphql(`query($id: ID!) { eventStats(eventId: $id) { ${STATS_FIELDS} } }`, { id: eventId });
  showStats(data.eventStats);
  await loadSales();
  watch(eventId);
}

async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    const data = await graphql(
      "mutation($input: LoginInput!) { login(input: $input) { accessToken user { name role } } }",
      { input: { email: $("email").value, password: $("password").value } },
    );
    state.token = data.login.accessToken;
    $("status").textContent = `signed in as ${data.login.user.name}`;
    $("signin").hidden = true;
    $("board").hidden = false;
    $("zone").textContent = zone;
    const now = Date.now();
    const year = 365 * 24 * 3600 * 1000;
    const mine = await graphql(
      "query($from: DateTime!, $to: DateTime!) { organizerStats(from: $from, to: $to) { events { eventId title startsAt } } }",
      { from: new Date(now - year).toISOString(), to: new Date(now + 2 * year).toISOString() },
    );
    for (const e of mine.organizerStats.events) {
      const option = document.createElement("option");
      option.value = e.eventId;
      option.textContent = `${e.title} (${new Date(e.startsAt).toLocaleDateString()})`;
      $("events").append(option);
    }
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
}

$("signin").addEventListener("submit", signIn);
$("events").addEventListener("change", (event) => chooseEvent(event.target.value).catch((e) => { $("status").textContent = e.message; }));
// The form works from here on (tests wait for this before signing in).
document.documentElement.dataset.ready = "true";
