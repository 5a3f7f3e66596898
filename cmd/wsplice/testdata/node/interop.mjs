// interop.mjs: a new user's check of wsplice with Node's ws library, a
// WebSocket implementation independent of the server's. It starts an echo
// upstream, connects to wsplice (argv[2] = ws://host:port), and walks
// through PROTOCOL.md: connect, text and binary data both ways, a ping,
// terminate, onSocketDisconnect, errors. Exit 0 on success; any failure
// prints why and exits 1. Bounded by a 20 s watchdog.
import { WebSocket, WebSocketServer } from "ws";

const wsplice = process.argv[2];
const fail = (msg) => { console.error("FAIL:", msg); process.exit(1); };
setTimeout(() => fail("timed out after 20s"), 20000).unref();

const upstream = new WebSocketServer({ host: "127.0.0.1", port: 0 });
const upstreamMsgs = [];
upstream.on("connection", (sock, req) => {
  sock.on("message", (data, isBinary) => {
    upstreamMsgs.push({ text: !isBinary, data: Buffer.from(data) });
    const s = Buffer.from(data).toString();
    if (s === "close-me") { sock.close(4123, "bye from upstream"); return; }
    sock.send(data, { binary: isBinary }); // echo, same type
  });
});
await new Promise((r) => upstream.on("listening", r));
const upURL = `ws://127.0.0.1:${upstream.address().port}/echo`;

const client = new WebSocket(wsplice);
client.binaryType = "nodebuffer";
const inbox = [];
let waiter = null;
client.on("message", (data, isBinary) => {
  if (!isBinary) fail("wsplice sent a text frame; every message must be binary");
  inbox.push(Buffer.from(data));
  if (waiter) { const w = waiter; waiter = null; w(); }
});
client.on("error", (e) => fail("client error: " + e.message));
await new Promise((r, j) => { client.on("open", r); client.on("unexpected-response", (_, res) => j(new Error("HTTP " + res.statusCode))); });

async function next(pred, what) {
  for (;;) {
    const i = inbox.findIndex(pred);
    if (i >= 0) return inbox.splice(i, 1)[0];
    await new Promise((r) => (waiter = r));
  }
}
const indexOf = (b) => b.readUInt16BE(0);
const isControl = (b) => indexOf(b) === 0xffff;
const json = (b) => JSON.parse(b.subarray(2).toString());
const frame = (index, payload) => {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const b = Buffer.alloc(2 + p.length);
  b.writeUInt16BE(index, 0);
  p.copy(b, 2);
  return b;
};
let nextId = 1;
async function call(method, params) {
  const id = nextId++;
  client.send(frame(0xffff, JSON.stringify({ id, type: "method", method, params })), { binary: false });
  const r = await next((b) => isControl(b) && json(b).type === "reply" && json(b).id === id);
  return json(r);
}

// connect: smallest free index, subprotocol "" when none.
let r = await call("connect", { url: upURL });
if (r.error || r.result.index !== 0 || r.result.subprotocol !== "") fail("connect: " + JSON.stringify(r));
let r2 = await call("connect", { url: upURL });
if (r2.error || r2.result.index !== 1) fail("second connect: " + JSON.stringify(r2));

// Text stays text, binary stays binary toward the upstream; echoes come back binary with the index.
client.send(frame(0, "hello text"), { binary: false });
client.send(frame(1, Buffer.from([0, 1, 2, 255])), { binary: true });
const e0 = await next((b) => indexOf(b) === 0);
const e1 = await next((b) => indexOf(b) === 1);
if (e0.subarray(2).toString() !== "hello text") fail("echo on 0: " + e0.subarray(2));
if (!e1.subarray(2).equals(Buffer.from([0, 1, 2, 255]))) fail("echo on 1");
const t = upstreamMsgs.find((m) => m.data.toString() === "hello text");
const bm = upstreamMsgs.find((m) => m.data.length === 4 && m.data[3] === 255);
if (!t || !t.text) fail("text message did not reach the upstream as text");
if (!bm || bm.text) fail("binary message did not reach the upstream as binary");

// A 1 MiB message arrives whole.
const big = Buffer.alloc(1 << 20, 7);
client.send(frame(1, big), { binary: true });
const eb = await next((b) => indexOf(b) === 1 && b.length === 2 + big.length);
if (!eb.subarray(2).equals(big)) fail("1 MiB echo differs");

// Ping is answered by wsplice with the same payload.
await new Promise((res) => { client.once("pong", (p) => { if (p.toString() !== "np") fail("pong payload"); res(); }); client.ping("np"); });

// Errors: unknown index (warn 4004), unknown method (4003), bad scheme (4005).
client.send(frame(9, "nobody"), { binary: true });
const w = await next((b) => isControl(b) && json(b).method === "warn");
if (json(w).params.code !== 4004) fail("warn: " + JSON.stringify(json(w)));
r = await call("frobnicate", {});
if (!r.error || r.error.code !== 4003) fail("unknown method: " + JSON.stringify(r));
r = await call("connect", { url: "http://10.0.0.1/" });
if (!r.error || r.error.code !== 4005) fail("bad scheme: " + JSON.stringify(r));

// onSocketDisconnect carries the upstream's close code and reason.
client.send(frame(1, "close-me"), { binary: false });
const d = await next((b) => isControl(b) && json(b).method === "onSocketDisconnect");
const dp = json(d).params;
if (dp.index !== 1 || dp.code !== 4123 || dp.message !== "bye from upstream") fail("onSocketDisconnect: " + JSON.stringify(dp));

// terminate frees the index; the next connect gets it back.
r = await call("terminate", { index: 0, code: 4000, reason: "done" });
if (r.error) fail("terminate: " + JSON.stringify(r));
r = await call("connect", { url: upURL });
if (r.error || r.result.index !== 0) fail("reconnect: " + JSON.stringify(r));

// Close: echoed with the same code.
await new Promise((res) => {
  client.on("close", (code) => { if (code !== 4321) fail("close echo code " + code); res(); });
  client.close(4321, "the end");
});
upstream.close();
console.log("node interop: ok");
process.exit(0);
