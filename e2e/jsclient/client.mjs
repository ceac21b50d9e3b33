// A real Matrix client with its own end-to-end encryption (matrix-js-sdk
// 43.0.0 with its Rust crypto, in memory) for the bridge's e2e tests
// (e2e/jsclient_test.go drives it).
//
// Protocol: one JSON object per line on stdin, {"id": <any>, "cmd": "<name>",
// ...arguments}; one answer per command on stdout, {"id": <same>, "ok": true,
// ...result} or {"id": <same>, "ok": false, "error": "..."}. Commands run
// concurrently and may be answered out of order (match answers by id).
// Nothing else is written to stdout: logs (and the SDK's, at warn) go to
// stderr.
//
// Commands:
//   login {baseUrl, userId, accessToken, deviceId}        -> {user_id, device_id}
//   register {baseUrl, username, password}                -> {user_id, device_id, access_token}
//     (POST /_matrix/client/v3/register with m.login.dummy; then as login)
//     Both start the client (initRustCrypto({useIndexedDB: false})) and
//     answer after the first PREPARED sync, once the homeserver has this
//     device's keys and one-time keys.
//   createRoom {invite: [user ids], encrypted (default true), name?, preset?} -> {room_id}
//   joinRoom {room}                                       -> {room_id}
//     Both answer once the client's sync has the room as joined (so its
//     m.room.encryption state is known before a send).
//   waitMember {room, user, membership ("join"), timeoutMs} -> {membership}
//   send {room, content, encrypt?}                        -> {event_id}   (an m.room.message)
//   sendEvent {room, type, content, encrypt?}             -> {event_id}   (e.g. m.reaction)
//     The SDK encrypts in an encrypted room. Before sending, the client waits
//     until its crypto knows the room is encrypted when the room has an
//     m.room.encryption state event, so a send never leaks in the clear.
//     encrypt: absent = what matrix-js-sdk (and so Element Web) does, which
//     sends m.reaction (and redactions) in the clear even in an encrypted
//     room; true = encrypt whatever the type in an encrypted room (as
//     matrix-rust-sdk clients, e.g. Element X, do with reactions); false =
//     send in the clear.
//   uploadFile {room, name, mimetype, dataBase64, msgtype ("m.file"), body?} -> {event_id, mxc, file}
//     Encrypts the bytes (AES-CTR-256 with WebCrypto, the Matrix encrypted
//     attachment format: file = {url, key (JWK), iv, hashes.sha256, v: "v2"}),
//     uploads the ciphertext and sends the message with `file` (no `url`).
//   downloadDecrypt {file}                                -> {dataBase64, size}
//     Downloads file.url (authenticated media), checks hashes.sha256 and
//     decrypts.
//   waitDecrypted {room?, sender?, bodyContains?, type?, eventId?, relType?,
//                  timeoutMs (30000), allowClear (false)}
//     -> {event_id, room_id, sender, type, wire_type, content, wire_relates_to?,
//         origin_server_ts, encryption_info?}
//     The first matching event since the client started (every room event is
//     kept, so an event that arrived before the wait is found). content is
//     the clear (decrypted, unedited) content; wire_relates_to the
//     m.relates_to of the wire (encrypted) content; encryption_info the
//     SDK's shield, {shield_colour: NONE|GREY|RED, shield_reason: null or an
//     EventShieldReason name, e.g. UNSIGNED_DEVICE}. A matching event that
//     arrived in the clear is an error at once unless allowClear. An event
//     that could not be decrypted keeps being waited for (its key may still
//     arrive); at the timeout the answer is "undecryptable: ..." if one
//     matched (room, sender, eventId), else "timeout: ...".
//   events {}                                             -> {events: [summary...]}  (debugging)
//   shareKeys {}                                          -> {}  (no-op: the SDK shares keys on send)
//   ping {}                                               -> {}
//   stop {}                                               -> {} then stopClient and exit 0
//
// The process is bounded: it exits (status 3) after a maximum lifetime
// (--max-lifetime <duration> or $JSCLIENT_MAX_LIFETIME, e.g. "90s", "5m" or
// milliseconds; default 5m), and with status 0 when stdin closes.
import "./polyfill.mjs";
import readline from "node:readline";

// Nothing but answers may reach stdout: the SDK and the Rust crypto log with
// console.log/info/debug too.
for (const m of ["log", "info", "debug", "trace"]) console[m] = (...a) => console.error(...a);

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
const { EventShieldColour, EventShieldReason } = await import("matrix-js-sdk/lib/crypto-api/index.js");

// The SDK's logging: warn and up ($JSCLIENT_LOG_LEVEL: trace, debug, info,
// warn, error), on stderr. The global logger is loglevel's; the client's (and
// its children: sync, Rust crypto) is this one, as loglevel's children are
// created at debug.
const LEVELS = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 };
const minLevel = LEVELS[process.env.JSCLIENT_LOG_LEVEL ?? "warn"] ?? LEVELS.warn;
logger.setLevel(Object.keys(LEVELS)[minLevel]);
// Synapse has no MSC4143 RTC transports; the SDK warns (with a stack) at start.
const harmless = (a) => a.some((x) => String(x?.message ?? x).includes("msc4143/rtc/transports"));
function sdkLogger(prefix) {
  const l = { getChild: (p) => sdkLogger(prefix + p) };
  for (const [name, n] of Object.entries(LEVELS)) {
    l[name] = n < minLevel ? () => {} : (...a) => harmless(a) || console.error(new Date().toISOString(), name.toUpperCase(), prefix, ...a);
  }
  return l;
}

function log(...a) {
  console.error(new Date().toISOString(), "jsclient:", ...a);
}

function parseDuration(s) {
  if (s === undefined || s === null || s === "") return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(s).trim());
  if (!m) throw new Error(`bad duration ${JSON.stringify(s)}`);
  const mult = { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] ?? "ms"];
  return Number(m[1]) * mult;
}

function argValue(name) {
  const i = process.argv.indexOf(name);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(name + "="));
  return eq ? eq.slice(name.length + 1) : undefined;
}

const maxLifetimeMs = parseDuration(argValue("--max-lifetime") ?? process.env.JSCLIENT_MAX_LIFETIME) ?? 5 * 60 * 1000;
setTimeout(() => {
  log(`maximum lifetime of ${maxLifetimeMs} ms reached; exiting`);
  process.exit(3);
}, maxLifetimeMs);

process.on("unhandledRejection", (e) => log("unhandled rejection:", e?.stack ?? e));
process.on("uncaughtException", (e) => log("uncaught exception:", e?.stack ?? e));

function answer(obj) {
  // Synchronous for pipes and files on Linux, so nothing is lost on exit.
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- base64 ----

const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const unpadded = (s) => s.replace(/=+$/, "");
const b64Unpadded = (bytes) => unpadded(b64(bytes));
function fromB64(s) {
  // Standard or URL-safe, padded or not.
  return new Uint8Array(Buffer.from(String(s).replace(/-/g, "+").replace(/_/g, "/"), "base64"));
}

// ---- the client ----

let client = null;
const encryptOverride = new Map();
let baseUrl = "";
let accessToken = "";

async function api(method, path, body, { raw = false, headers = {} } = {}) {
  const res = await fetch(baseUrl + path, {
    method,
    headers: {
      Authorization: `Bearer ${accessToken}`,
      ...(body !== undefined && !raw ? { "Content-Type": "application/json" } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
  });
  return res;
}

async function apiJSON(method, path, body) {
  const res = await api(method, path, body);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status}: ${text.slice(0, 300)}`);
  return json;
}

// Every room event the client has seen, by event id, in arrival order.
const seen = new Map();
// Pending waitDecrypted calls.
const waiters = new Set();

function summarize(evt) {
  const encrypted = evt.isEncrypted();
  let state;
  if (!encrypted) state = "clear";
  else if (evt.isBeingDecrypted() || !evt.getClearContent()) state = evt.isDecryptionFailure() ? "failed" : "pending";
  else state = evt.isDecryptionFailure() ? "failed" : "decrypted";
  return {
    event_id: evt.getId(),
    room_id: evt.getRoomId(),
    sender: evt.getSender(),
    type: evt.getType(),
    wire_type: evt.getWireType(),
    content: state === "decrypted" || state === "clear" ? evt.getOriginalContent() : undefined,
    wire_relates_to: evt.getWireContent()?.["m.relates_to"],
    origin_server_ts: evt.getTs(),
    state,
    failure: state === "failed" ? String(evt.decryptionFailureReason ?? "") : undefined,
    evt,
  };
}

function record(evt) {
  const eventId = evt.getId();
  if (!eventId || !eventId.startsWith("$") || !evt.getRoomId()) return; // local echoes, non-room events
  if (evt.isState() && !evt.isEncrypted()) return;
  seen.set(eventId, summarize(evt));
  for (const w of waiters) w.check();
}

function basicMatch(rec, f) {
  if (f.room && rec.room_id !== f.room) return false;
  if (f.sender && rec.sender !== f.sender) return false;
  if (f.eventId && rec.event_id !== f.eventId) return false;
  return true;
}

function contentMatch(rec, f) {
  const c = rec.content ?? {};
  if (f.type && rec.type !== f.type) return false;
  if (f.bodyContains && !(typeof c.body === "string" && c.body.includes(f.bodyContains))) return false;
  if (f.relType && c["m.relates_to"]?.rel_type !== f.relType) return false;
  return true;
}

async function publicEvent(rec) {
  const out = { ...rec };
  delete out.evt;
  delete out.state;
  delete out.failure;
  if (rec.wire_type === "m.room.encrypted") {
    try {
      const info = await client.getCrypto()?.getEncryptionInfoForEvent(rec.evt);
      if (info) {
        out.encryption_info = {
          shield_colour: EventShieldColour[info.shieldColour] ?? String(info.shieldColour), // NONE, GREY, RED
          shield_reason: info.shieldReason == null ? null : (EventShieldReason[info.shieldReason] ?? String(info.shieldReason)),
        };
      }
    } catch (e) {
      log("getEncryptionInfoForEvent:", e?.message ?? e);
    }
  }
  return out;
}

function waitDecrypted(f) {
  const timeoutMs = f.timeoutMs ?? 30000;
  return new Promise((resolve, reject) => {
    const w = {
      done: false,
      check() {
        if (w.done) return;
        for (const rec of seen.values()) {
          if (!basicMatch(rec, f)) continue;
          if (rec.state === "decrypted" && contentMatch(rec, f)) return w.finish(null, rec);
          if (rec.state === "clear" && contentMatch(rec, f)) {
            if (f.allowClear) return w.finish(null, rec);
            return w.finish(new Error(`not encrypted: ${rec.event_id} from ${rec.sender} arrived in the clear as ${rec.wire_type}`));
          }
        }
      },
      finish(err, rec) {
        w.done = true;
        clearTimeout(w.timer);
        waiters.delete(w);
        if (err) reject(err);
        else publicEvent(rec).then(resolve, reject);
      },
    };
    w.timer = setTimeout(() => {
      const failed = [...seen.values()].filter((r) => r.state === "failed" && basicMatch(r, f));
      const pending = [...seen.values()].filter((r) => r.state === "pending" && basicMatch(r, f));
      if (failed.length > 0) {
        w.finish(new Error(`undecryptable: ${failed.map((r) => `${r.event_id} from ${r.sender}: ${r.failure}`).join("; ")}`));
      } else {
        w.finish(new Error(`timeout: no matching event within ${timeoutMs} ms (${seen.size} events seen, ${pending.length} matching still being decrypted)`));
      }
    }, timeoutMs);
    waiters.add(w);
    w.check();
  });
}

// Our device is usable by others once the homeserver lists its keys and has
// one-time keys to claim.
async function waitKeysPublished(userId, deviceId, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const q = await apiJSON("POST", "/_matrix/client/v3/keys/query", { device_keys: { [userId]: [deviceId] } });
      const counts = await apiJSON("POST", "/_matrix/client/v3/keys/upload", {});
      if (q?.device_keys?.[userId]?.[deviceId] && (counts?.one_time_key_counts?.signed_curve25519 ?? 0) > 0) return;
    } catch (e) {
      log("checking the published keys:", e?.message ?? e);
    }
    if (Date.now() > deadline) throw new Error(`device ${deviceId}'s keys were not published within ${timeoutMs} ms`);
    await sleep(100);
  }
}

async function start({ baseUrl: url, userId, accessToken: token, deviceId }) {
  if (client) throw new Error("already started");
  if (!url || !userId || !token || !deviceId) throw new Error("baseUrl, userId, accessToken and deviceId are required");
  baseUrl = url.replace(/\/+$/, "");
  accessToken = token;
  client = sdk.createClient({ baseUrl, userId, deviceId, accessToken: token, logger: sdkLogger("") });
  await client.initRustCrypto({ useIndexedDB: false });
  // Per-send encryption overrides (the encrypt argument), by transaction id.
  const sdkShouldEncrypt = client.shouldEncryptEventForRoom.bind(client);
  client.shouldEncryptEventForRoom = async (event, room) => {
    const force = encryptOverride.get(event.getTxnId());
    if (force === false) return false;
    if (force === true && !event.isEncrypted() && !event.isRedaction()) {
      return room.hasEncryptionStateEvent() || !!(await client.getCrypto()?.isEncryptionEnabledInRoom(room.roomId));
    }
    return sdkShouldEncrypt(event, room);
  };
  client.on(sdk.RoomEvent.Timeline, (evt) => record(evt));
  client.on(sdk.MatrixEventEvent.Decrypted, (evt) => record(evt));
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      else if (state === "ERROR") log("sync error:", data?.error?.message ?? data?.error);
    });
    setTimeout(() => reject(new Error("no PREPARED sync within 30 s")), 30000);
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  await waitKeysPublished(userId, deviceId);
  log(`started as ${userId} (device ${deviceId})`);
  return { user_id: userId, device_id: deviceId };
}

function need() {
  if (!client) throw new Error("not logged in");
  return client;
}

async function waitUntil(what, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timeout: ${what} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

async function waitJoinedAndSynced(roomId, timeoutMs = 30000) {
  const c = need();
  await waitUntil(`${roomId} joined in the client's sync`, timeoutMs, () => c.getRoom(roomId)?.getMyMembership() === "join");
}

// An encrypted room is only sent to once the crypto knows it is encrypted.
async function readyToSend(roomId) {
  const c = need();
  await waitJoinedAndSynced(roomId, 15000);
  const room = c.getRoom(roomId);
  if (room.currentState.getStateEvents("m.room.encryption", "")) {
    await waitUntil(`the crypto to treat ${roomId} as encrypted`, 15000, () => c.getCrypto().isEncryptionEnabledInRoom(roomId));
  }
}

async function sendWith(room, type, content, encrypt) {
  const c = need();
  await readyToSend(room);
  const txnId = c.makeTxnId();
  if (encrypt === true || encrypt === false) encryptOverride.set(txnId, encrypt);
  try {
    const { event_id } = await c.sendEvent(room, type, content, txnId);
    return { event_id };
  } finally {
    encryptOverride.delete(txnId);
  }
}

async function encryptAttachment(data) {
  const keyBytes = crypto.getRandomValues(new Uint8Array(32));
  const iv = new Uint8Array(16);
  crypto.getRandomValues(iv.subarray(0, 8)); // the low 64 bits are the block counter, from 0
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "AES-CTR" }, true, ["encrypt", "decrypt"]);
  const ciphertext = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CTR", counter: iv, length: 64 }, key, data));
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const sha256 = new Uint8Array(await crypto.subtle.digest("SHA-256", ciphertext));
  return {
    ciphertext,
    info: {
      v: "v2",
      key: { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: jwk.k, ext: true },
      iv: b64Unpadded(iv),
      hashes: { sha256: b64Unpadded(sha256) },
    },
  };
}

async function decryptAttachment(ciphertext, file) {
  if (file?.v !== "v2") throw new Error(`unsupported encrypted file version ${JSON.stringify(file?.v)}`);
  if (file.key?.alg !== "A256CTR" || file.key?.kty !== "oct") throw new Error("key is not an A256CTR JWK");
  const sha256 = b64Unpadded(new Uint8Array(await crypto.subtle.digest("SHA-256", ciphertext)));
  if (sha256 !== unpadded(String(file.hashes?.sha256 ?? ""))) {
    throw new Error(`sha256 mismatch: ciphertext has ${sha256}, event says ${file.hashes?.sha256}`);
  }
  const key = await crypto.subtle.importKey("raw", fromB64(file.key.k), { name: "AES-CTR" }, false, ["decrypt"]);
  const iv = fromB64(file.iv);
  if (iv.length !== 16) throw new Error(`iv is ${iv.length} bytes, not 16`);
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CTR", counter: iv, length: 64 }, key, ciphertext));
}

async function download(mxc) {
  const m = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(String(mxc));
  if (!m) throw new Error(`not an mxc URI: ${mxc}`);
  const [server, mediaId] = [encodeURIComponent(m[1]), encodeURIComponent(m[2])];
  let res = await api("GET", `/_matrix/client/v1/media/download/${server}/${mediaId}`);
  if (res.status === 404 || res.status === 400) {
    await res.body?.cancel();
    res = await api("GET", `/_matrix/media/v3/download/${server}/${mediaId}`); // no authenticated media
  }
  if (!res.ok) throw new Error(`downloading ${mxc}: HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
  return new Uint8Array(await res.arrayBuffer());
}

const handlers = {
  async ping() {
    return {};
  },

  async login(a) {
    return start(a);
  },

  async register({ baseUrl: url, username, password }) {
    if (!url || !username || !password) throw new Error("baseUrl, username and password are required");
    const res = await fetch(url.replace(/\/+$/, "") + "/_matrix/client/v3/register", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password, auth: { type: "m.login.dummy" }, initial_device_display_name: "e2e jsclient" }),
    });
    const reg = await res.json().catch(() => ({}));
    if (!res.ok || !reg.access_token) throw new Error(`register ${username}: HTTP ${res.status}: ${JSON.stringify(reg).slice(0, 300)}`);
    const out = await start({ baseUrl: url, userId: reg.user_id, accessToken: reg.access_token, deviceId: reg.device_id });
    return { ...out, access_token: reg.access_token };
  },

  async createRoom({ invite = [], encrypted = true, name, preset }) {
    const c = need();
    const opts = { invite, preset: preset ?? "private_chat" };
    if (name) opts.name = name;
    if (encrypted) opts.initial_state = [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }];
    const { room_id } = await c.createRoom(opts);
    await waitJoinedAndSynced(room_id);
    return { room_id };
  },

  async joinRoom({ room }) {
    const c = need();
    const r = await c.joinRoom(room);
    await waitJoinedAndSynced(r.roomId);
    return { room_id: r.roomId };
  },

  async waitMember({ room, user, membership = "join", timeoutMs = 30000 }) {
    const c = need();
    await waitUntil(`${user} to be ${membership} in ${room}`, timeoutMs, () => c.getRoom(room)?.getMember(user)?.membership === membership);
    return { membership };
  },

  async send({ room, content, encrypt }) {
    if (!content || typeof content !== "object") throw new Error("content is required");
    return sendWith(room, "m.room.message", content, encrypt);
  },

  async sendEvent({ room, type, content, encrypt }) {
    if (!type || !content || typeof content !== "object") throw new Error("type and content are required");
    return sendWith(room, type, content, encrypt);
  },

  async uploadFile({ room, name, mimetype = "application/octet-stream", dataBase64, msgtype = "m.file", body }) {
    need();
    if (!name || typeof dataBase64 !== "string") throw new Error("name and dataBase64 are required");
    const data = fromB64(dataBase64);
    const { ciphertext, info } = await encryptAttachment(data);
    const up = await api("POST", `/_matrix/media/v3/upload?filename=${encodeURIComponent(name)}`, ciphertext, {
      raw: true,
      headers: { "Content-Type": "application/octet-stream" },
    });
    const upText = await up.text();
    if (!up.ok) throw new Error(`upload: HTTP ${up.status}: ${upText.slice(0, 300)}`);
    const mxc = JSON.parse(upText).content_uri;
    const file = { url: mxc, ...info };
    const content = { msgtype, body: body ?? name, filename: name, info: { mimetype, size: data.length }, file };
    const { event_id } = await sendWith(room, "m.room.message", content);
    return { event_id, mxc, file };
  },

  async downloadDecrypt({ file }) {
    need();
    if (!file?.url) throw new Error("file.url is required");
    const plain = await decryptAttachment(await download(file.url), file);
    return { dataBase64: b64(plain), size: plain.length };
  },

  async waitDecrypted(f) {
    need();
    return waitDecrypted(f);
  },

  async events() {
    return {
      events: [...seen.values()].map((r) => ({
        event_id: r.event_id,
        room_id: r.room_id,
        sender: r.sender,
        type: r.type,
        wire_type: r.wire_type,
        state: r.state,
        failure: r.failure,
      })),
    };
  },

  async shareKeys() {
    return {};
  },

  async stop() {
    setImmediate(shutdown, 0);
    return {};
  },
};

let shuttingDown = false;
function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  try {
    client?.stopClient();
  } catch (e) {
    log("stopClient:", e?.message ?? e);
  }
  process.exit(code);
}

let inflight = 0;
let stdinClosed = false;
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", async (line) => {
  inflight++;
  try {
    await handleLine(line);
  } finally {
    inflight--;
    if (stdinClosed && inflight === 0) shutdown(0);
  }
});
// When stdin closes, the commands in flight are answered, then the process exits.
rl.on("close", () => {
  log("stdin closed; exiting");
  stdinClosed = true;
  if (inflight === 0) shutdown(0);
});

async function handleLine(line) {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    answer({ id: null, ok: false, error: `bad JSON: ${e.message}` });
    return;
  }
  const { id, cmd, ...args } = msg ?? {};
  const h = Object.hasOwn(handlers, cmd) ? handlers[cmd] : undefined;
  if (!h) {
    answer({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` });
    return;
  }
  try {
    const result = await h(args);
    answer({ ...result, id, ok: true });
  } catch (e) {
    const err = e?.errcode ? `${e.errcode}: ${e.message}` : (e?.message ?? String(e));
    log(`${cmd} (id ${JSON.stringify(id)}) failed:`, err);
    answer({ id, ok: false, error: err });
  }
}
