// Conformance of the emulator with the AWS SDK for JavaScript v3
// (@aws-sdk/client-bedrock-runtime on its default request handler, which
// speaks HTTP/2 to an http:// endpoint; one attempt).
//
// Usage: node js_client.mjs ENDPOINT CASES_JSON
//
// Runs every case of CASES_JSON against the emulator at ENDPOINT (its admin
// API resets it and installs each case's faults and quotas first) and checks
// what the client surfaces: the exception class and name, HTTP status,
// fault, message, modelled members and request id, or the answer's fields
// and events. Prints one line per failed case and a summary; exits 1 when a
// case failed.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import * as sdk from "@aws-sdk/client-bedrock-runtime";

const {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  CountTokensCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
} = sdk;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const [endpoint, casesPath] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesPath, "utf8")).cases;
const client = new BedrockRuntimeClient({
  region: "us-east-1",
  endpoint,
  credentials: { accessKeyId: "AKID", secretAccessKey: "SECRET" },
  maxAttempts: 1,
});

async function admin(method, path, body) {
  const r = await fetch(`${endpoint}/_emulator${path}`, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await r.arrayBuffer();
  if (!r.ok) throw new Error(`admin ${method} ${path}: ${r.status}`);
}

function dig(obj, dotted) {
  return dotted.split(".").reduce((o, k) => o[k], obj);
}

function invokeBody(c) {
  const body = { ...c.body };
  if (c.image_bytes !== undefined) {
    const raw = Buffer.alloc(c.image_bytes);
    raw.write("\x89PNG", 0, "latin1");
    const image = { type: "image", source: { type: "base64", media_type: "image/png", data: raw.toString("base64") } };
    body.messages = [{ role: "user", content: [image, { type: "text", text: body.messages[0].content }] }];
  }
  if (c.pad_to !== undefined) {
    body.pad = "";
    const short = JSON.stringify(body).length;
    body.pad = "x".repeat(c.pad_to - short);
  }
  return new TextEncoder().encode(JSON.stringify(body));
}

const utf8 = new TextDecoder();

async function call(c) {
  const inferenceConfig = c.maxTokens !== undefined ? { maxTokens: c.maxTokens } : undefined;
  if (c.op === "converse" || c.op === "converse_stream") {
    const input = { modelId: c.model, messages: c.messages, inferenceConfig };
    if (c.op === "converse") return { out: await client.send(new ConverseCommand(input)) };
    const out = await client.send(new ConverseStreamCommand(input));
    const events = [];
    try {
      for await (const ev of out.stream) events.push(ev);
    } catch (e) {
      return { out, events, streamError: e };
    }
    return { out, events };
  }
  if (c.op === "count_tokens") {
    const input = c.body ? { invokeModel: { body: invokeBody(c) } } : { converse: { messages: c.messages } };
    return { out: await client.send(new CountTokensCommand({ modelId: c.model, input })) };
  }
  const input = { modelId: c.model, body: invokeBody(c), contentType: "application/json" };
  if (c.op === "invoke") return { out: await client.send(new InvokeModelCommand(input)) };
  const out = await client.send(new InvokeModelWithResponseStreamCommand(input));
  const events = [];
  try {
    for await (const ev of out.body) events.push(ev);
  } catch (e) {
    return { out, events, streamError: e };
  }
  return { out, events };
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function checkError(exp, e, problems, ids) {
  const cls = sdk[exp.name];
  if (e.name !== exp.name) problems.push(`name ${e.name} != ${exp.name}`);
  if (typeof cls !== "function" || !(e instanceof cls)) problems.push(`not an instance of ${exp.name}`);
  if (exp.status !== undefined && e.$metadata?.httpStatusCode !== exp.status) {
    problems.push(`status ${e.$metadata?.httpStatusCode} != ${exp.status}`);
  }
  const fault = exp.status >= 500 ? "server" : "client";
  if (exp.status !== undefined && e.$fault !== fault) problems.push(`$fault ${e.$fault} != ${fault}`);
  if (e.message !== exp.message) problems.push(`message ${JSON.stringify(e.message)} != ${JSON.stringify(exp.message)}`);
  for (const [k, v] of Object.entries(exp.fields ?? {})) {
    if (e[k] !== v) problems.push(`member ${k} ${JSON.stringify(e[k])} != ${JSON.stringify(v)}`);
  }
  const rid = e.$metadata?.requestId ?? "";
  if (!UUID.test(rid)) problems.push(`request id ${JSON.stringify(rid)} is not a UUID`);
  ids.push(rid);
}

async function runCase(c, ids) {
  await admin("POST", "/reset");
  if (c.quotas) await admin("PUT", "/quotas", c.quotas);
  if (c.faults) await admin("PUT", "/faults", c.faults);
  const exp = c.expect;
  const problems = [];
  for (let i = 1; i < (c.repeat ?? 1); i++) await call(c);
  let res;
  try {
    res = await call(c);
  } catch (e) {
    // A cut connection, stream or body: an error without an HTTP status
    // (or a body that does not parse), never a service exception.
    const service = typeof e.$metadata?.httpStatusCode === "number" && e.$metadata.httpStatusCode !== 200;
    if (exp.transport_error) return service ? [`a service error ${e.name} where the transport was cut`] : [];
    if (!exp.error) return [`unexpected ${e.name}: ${e.message}`];
    checkError(exp.error, e, problems, ids);
    return problems;
  }
  if (exp.error) return [`no error; expected ${exp.error.name}`];
  const { out, events, streamError } = res;
  if (exp.transport_error) {
    if (streamError && !(streamError.$metadata?.httpStatusCode >= 300)) return [];
    return [streamError ? `a service error ${streamError.name} where the stream was cut` : "an answer where the transport was cut"];
  }
  const rid = out.$metadata?.requestId ?? "";
  if (!UUID.test(rid)) problems.push(`request id ${JSON.stringify(rid)} is not a UUID`);
  ids.push(rid);
  if (exp.stream_error) {
    const se = exp.stream_error;
    if (!streamError) return [`stream ended without ${se.name}`];
    if (events.length !== se.events_before) problems.push(`${events.length} events before the exception, expected ${se.events_before}`);
    const cls = sdk[se.name];
    if (streamError.name !== se.name) problems.push(`stream exception name ${streamError.name} != ${se.name}`);
    if (typeof cls !== "function" || !(streamError instanceof cls)) problems.push(`stream exception not an instance of ${se.name}`);
    if (streamError.message !== se.message) problems.push(`stream exception message ${JSON.stringify(streamError.message)} != ${JSON.stringify(se.message)}`);
    for (const [k, v] of Object.entries(se.fields ?? {})) {
      if (streamError[k] !== v) problems.push(`member ${k} ${JSON.stringify(streamError[k])} != ${JSON.stringify(v)}`);
    }
    return problems;
  }
  if (streamError) return [`stream error ${streamError.name}: ${streamError.message}`];
  const ok = exp.ok;
  let got;
  if (c.op === "converse") {
    got = { stopReason: out.stopReason, inputTokens: out.usage.inputTokens, outputTokens: out.usage.outputTokens };
  } else if (c.op === "count_tokens") {
    got = { inputTokens: out.inputTokens };
  } else if (c.op === "converse_stream") {
    got = { events: events.map((ev) => Object.keys(ev).find((k) => ev[k] !== undefined)) };
    for (const ev of events) {
      if (ev.messageStop) got.stopReason = ev.messageStop.stopReason;
      if (ev.metadata) {
        got.inputTokens = ev.metadata.usage.inputTokens;
        got.outputTokens = ev.metadata.usage.outputTokens;
      }
    }
  } else if (c.op === "invoke") {
    const body = JSON.parse(utf8.decode(out.body));
    got = { body: Object.fromEntries(Object.keys(ok.body).map((k) => [k, dig(body, k)])) };
  } else {
    got = { chunks: events.map((ev) => JSON.parse(utf8.decode(ev.chunk.bytes)).type) };
  }
  for (const [k, v] of Object.entries(ok)) {
    if (!same(got[k], v)) problems.push(`${k}: ${JSON.stringify(got[k])} != ${JSON.stringify(v)}`);
  }
  return problems;
}

const require = createRequire(import.meta.url);
const version = require("@aws-sdk/client-bedrock-runtime/package.json").version;
let failed = 0;
const ids = [];
for (const c of cases) {
  let problems;
  try {
    problems = await runCase(c, ids);
  } catch (e) {
    problems = [`${e.name}: ${e.message}`];
  }
  if (problems.length) {
    failed++;
    console.log(`FAIL js: ${c.name}: ${problems.join("; ")}`);
  }
}
if (new Set(ids).size !== ids.length) {
  failed++;
  console.log("FAIL js: request ids repeat");
}
console.log(`@aws-sdk/client-bedrock-runtime ${version} on node ${process.version}: ${cases.length - failed} of ${cases.length} cases pass`);
client.destroy();
process.exit(failed ? 1 : 0);
