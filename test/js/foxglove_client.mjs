// Drives the fleet Foxglove server with the real @foxglove/ws-protocol client, step by step.
// Usage: node foxglove_client.mjs <ws-or-wss-url> <steps.json>   (FOXGLOVE_CA=<pem>: trust that CA for wss://)
// Prints one JSON object {results: [...], error?: string} on stdout; every step has its own timeout.
import { readFileSync } from "node:fs";
import wsProtocol from "@foxglove/ws-protocol";
import WebSocket from "ws";

const { FoxgloveClient } = wsProtocol;

const [url, stepsFile] = process.argv.slice(2);
const steps = JSON.parse(readFileSync(stepsFile, "utf8"));
const STEP_TIMEOUT_MS = 8000;

const channels = new Map(); // topic -> channel
const services = new Map(); // name -> service
const statuses = [];
const failures = [];
const responses = [];
const parameterReplies = [];
const messagesBySub = new Map();
const graphUpdates = [];
const times = [];
let serverInfo = null;
let closed = false;
let closeInfo = null;
let lastSubscribeId = null;

// foxglove-sdk servers speak the ws-protocol v1 messages under the subprotocol name "foxglove.sdk.v1";
// FoxgloveClient lets the socket choose the subprotocol (its own constant is the older "foxglove.websocket.v1").
const SUBPROTOCOL = process.env.FOXGLOVE_SUBPROTOCOL ?? "foxglove.sdk.v1";
const ca = process.env.FOXGLOVE_CA ? readFileSync(process.env.FOXGLOVE_CA) : undefined;
const ws = new WebSocket(url, [SUBPROTOCOL], ca ? { ca } : {});
ws.on("close", (code, reason) => (closeInfo = { code, reason: reason.toString() }));
const client = new FoxgloveClient({ ws });
client.on("serverInfo", (info) => (serverInfo = info));
client.on("advertise", (list) => list.forEach((c) => channels.set(c.topic, c)));
client.on("advertiseServices", (list) => list.forEach((s) => services.set(s.name, s)));
client.on("status", (s) => statuses.push(s));
client.on("serviceCallFailure", (f) => failures.push(f));
client.on("serviceCallResponse", (r) => responses.push(r));
client.on("parameterValues", (p) => parameterReplies.push(p));
client.on("message", (m) => {
  const list = messagesBySub.get(m.subscriptionId) ?? [];
  list.push(m);
  messagesBySub.set(m.subscriptionId, list);
});
client.on("connectionGraphUpdate", (g) => graphUpdates.push(g));
client.on("time", (t) => times.push(t.timestamp));
client.on("close", () => (closed = true));
client.on("error", () => {});

function until(predicate, what, timeoutMs = STEP_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const value = predicate();
      if (value) return resolve(value);
      if (Date.now() - started > timeoutMs) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 5);
    };
    poll();
  });
}

const bytes = (view) => Buffer.from(view.buffer, view.byteOffset, view.byteLength);

// Minimal CDR reader: the encapsulation header (4 bytes) then the first string field of the message.
function firstCdrString(buf) {
  const littleEndian = buf[1] === 0x01;
  const length = littleEndian ? buf.readUInt32LE(4) : buf.readUInt32BE(4);
  return buf.subarray(8, 8 + length - 1).toString("utf8");
}

let nextCallId = 1;
async function call(serviceId, encoding, data) {
  const callId = nextCallId++;
  client.sendServiceCallRequest({ serviceId, callId, encoding, data });
  const reply = await until(
    () => responses.find((r) => r.callId === callId) ?? failures.find((f) => f.callId === callId),
    `reply to call ${callId}`,
  );
  if (reply.op === "serviceCallFailure") return { failure: reply.message };
  return { encoding: reply.encoding, hex: bytes(reply.data).toString("hex") };
}

async function run(step) {
  switch (step.op) {
    case "wait_channel": {
      const c = await until(() => channels.get(step.topic), `channel ${step.topic}`);
      return { id: c.id, topic: c.topic, encoding: c.encoding, schemaName: c.schemaName,
        schemaEncoding: c.schemaEncoding, schema: c.schema };
    }
    case "wait_service": {
      const s = await until(() => services.get(step.name), `service ${step.name}`);
      return { id: s.id, name: s.name, type: s.type, request: s.request, response: s.response };
    }
    case "subscribe": {
      const c = await until(() => channels.get(step.topic), `channel ${step.topic}`);
      const sub = client.subscribe(c.id);
      const got = await until(() => {
        const list = messagesBySub.get(sub) ?? [];
        return list.length >= (step.count ?? 1) ? list : null;
      }, `${step.count ?? 1} message(s) on ${step.topic}`);
      client.unsubscribe(sub);
      return { messages: got.map((m) => {
        const b = bytes(m.data);
        return { length: b.length, firstString: firstCdrString(b), hex: b.toString("hex") };
      }) };
    }
    case "subscribe_unknown": {
      const before = statuses.length;
      client.subscribe(step.channelId);
      await until(() => statuses.length > before, "a status reply", step.timeoutMs ?? 3000).catch(() => null);
      return { statuses: statuses.slice(before) };
    }
    case "call": {
      const s = await until(() => services.get(step.service), `service ${step.service}`);
      const data = step.hex !== undefined ? Buffer.from(step.hex, "hex") : Buffer.from(step.text ?? "", "utf8");
      return await call(s.id, step.encoding, new Uint8Array(data));
    }
    case "call_unknown": {
      const before = statuses.length;
      const callId = nextCallId++;
      client.sendServiceCallRequest({ serviceId: step.serviceId, callId, encoding: "cdr", data: new Uint8Array([0]) });
      await until(
        () => failures.find((f) => f.callId === callId) || statuses.length > before,
        "a failure or status reply",
      );
      return { failures: failures.filter((f) => f.callId === callId), statuses: statuses.slice(before) };
    }
    case "get_parameters": {
      const before = parameterReplies.length;
      client.getParameters(step.names ?? [], "req-1");
      const reply = await until(() => parameterReplies[before], "parameterValues");
      return { parameters: reply.parameters };
    }
    case "set_parameters": {
      const before = parameterReplies.length;
      client.setParameters(step.parameters, "req-2");
      const reply = await until(() => parameterReplies[before], "parameterValues").catch(() => null);
      return { parameters: reply?.parameters ?? null, statuses: statuses.slice() };
    }
    case "check_open":
      return { open: ws.readyState === WebSocket.OPEN && !closed, serverInfo };
    case "channels":
      // What the client has been shown so far (topics), e.g. before it logs in.
      return { topics: [...channels.keys()].sort() };
    case "login": {
      const s = await until(() => services.get("/fleet/login"), "service /fleet/login");
      const started = Date.now();
      const reply = await call(s.id, "json", new TextEncoder().encode(JSON.stringify({ token: step.token })));
      const out = { ...reply, elapsedMs: Date.now() - started };
      if (reply.hex) out.reply = JSON.parse(Buffer.from(reply.hex, "hex").toString("utf8"));
      return out;
    }
    case "subscribe_id": {
      // Subscribe by channel id (known to the test, not shown to this client) and collect the statuses it causes.
      const before = statuses.length;
      const sub = client.subscribe(step.channelId);
      lastSubscribeId = sub;
      await until(() => statuses.length > before, "a status reply", step.timeoutMs ?? 3000).catch(() => null);
      return { subscriptionId: sub, statuses: statuses.slice(before) };
    }
    case "messages_for":
      return { count: (messagesBySub.get(step.subscriptionId ?? lastSubscribeId) ?? []).length };
    case "request_status": {
      // A request that a not-logged-in client gets refused: parameters, connection graph.
      const before = statuses.length;
      if (step.what === "parameters") client.getParameters([], "req-x");
      else if (step.what === "graph") client.subscribeConnectionGraph();
      await until(() => statuses.length > before, "a status reply", step.timeoutMs ?? 3000).catch(() => null);
      return { statuses: statuses.slice(before), parameterReplies: parameterReplies.length,
        graphUpdates: graphUpdates.length };
    }
    case "graph": {
      client.subscribeConnectionGraph();
      const got = await until(() => {
        // Names with at least one node behind them (publishers, providers) in some update so far.
        const topics = new Set(graphUpdates.flatMap((g) =>
          g.publishedTopics.filter((t) => t.publisherIds.length > 0).map((t) => t.name)));
        const names = new Set(graphUpdates.flatMap((g) =>
          g.advertisedServices.filter((t) => t.providerIds.length > 0).map((t) => t.name)));
        return step.topics.every((t) => topics.has(t)) && step.services.every((n) => names.has(n)) ? graphUpdates : null;
      }, "a connection graph with the fake orchestrator");
      return { updates: got };
    }
    case "wait_time": {
      const t = await until(() => times.at(-1), "a server time message");
      return { timestamp: t.toString() };
    }
    case "advertise": {
      const before = statuses.length;
      const id = client.advertise({ topic: step.topic, encoding: step.encoding, schemaName: step.schemaName });
      await until(() => statuses.length > before, "a status reply", step.timeoutMs ?? 1500).catch(() => null);
      return { channelId: id, statuses: statuses.slice(before) };
    }
    case "publish": {
      const before = statuses.length;
      const data = step.hex !== undefined ? Buffer.from(step.hex, "hex") : Buffer.from(step.text ?? "", "utf8");
      client.sendMessage(step.channelId, new Uint8Array(data));
      const want = step.status;
      await until(
        () => statuses.slice(before).find((s) => !want || s.message.includes(want)),
        `a status containing ${want ?? "anything"}`,
        step.timeoutMs ?? STEP_TIMEOUT_MS,
      ).catch(() => null);
      return { statuses: statuses.slice(before) };
    }
    case "wait_closed": {
      await until(() => closeInfo, "the server to close the connection");
      return closeInfo;
    }
    default:
      throw new Error(`unknown step ${step.op}`);
  }
}

const results = [];
const output = { results };
try {
  await until(() => serverInfo ?? closeInfo, "serverInfo");
  if (!serverInfo) throw new Error(`connection closed before serverInfo (code ${closeInfo.code})`);
  for (const step of steps) results.push({ op: step.op, ...(await run(step)) });
} catch (err) {
  output.error = String(err?.message ?? err);
}
output.allStatuses = statuses;
output.closeInfo = closeInfo;
process.stdout.write(JSON.stringify(output) + "\n");
ws.close();
process.exit(0);
