import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { DecodeEvent, Message } from "../../src/guest/protocol.js";
import {
  FRAME_TYPES,
  FrameDecoder,
  HEADER_SIZE,
  MAX_PAYLOAD,
  decodePayload,
  encodeFrame,
  encodeMessage,
  signalName,
  signalNumber,
} from "../../src/guest/protocol.js";

type Encodable = Exclude<Message, { type: "invalid" }>;

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s));

const samples: Encodable[] = [
  { type: "hello", id: 1, version: 1, client: "vmstack" },
  { type: "ping", id: 2, data: bytes("abc") },
  { type: "pong", id: 2, data: bytes("") },
  {
    type: "exec", id: 3, shell: false, stdin: true, clearEnv: true, timeoutMs: 5000, graceMs: 100,
    cwd: "/tmp", argv: ["ls", "-l", "ünïcode"], env: ["A=1", "B="],
  },
  { type: "exec", id: 4, shell: true, stdin: false, clearEnv: false, timeoutMs: 0, graceMs: 0, cwd: "", argv: ["echo hi"], env: [] },
  { type: "stdin", id: 3, data: bytes("input") },
  { type: "stdout", id: 3, data: bytes("out") },
  { type: "stderr", id: 3, data: bytes("") },
  { type: "signal", id: 3, signal: 15 },
  { type: "writeFile", id: 5, mode: 0o755, mkdirs: true, path: "/a/b" },
  { type: "fileData", id: 5, data: bytes("chunk") },
  { type: "readFile", id: 6, path: "/etc/hostname" },
  { type: "power", id: 7, action: "reboot" },
  { type: "refresh", id: 10, seconds: 2 ** 33 + 5, nanoseconds: 999_999_999, seed: new Uint8Array(32).fill(0xa5) },
  { type: "helloReply", id: 1, version: 1, maxPayload: MAX_PAYLOAD, agentVersion: "0.1.0", kernel: "Linux 6.1 x86_64" },
  { type: "started", id: 3, pid: 4242 },
  { type: "exit", id: 3, exitCode: 3, signal: null, timedOut: false, outputHeldOpen: true, durationMs: 12 },
  { type: "exit", id: 4, exitCode: null, signal: 9, timedOut: true, outputHeldOpen: false, durationMs: 200 },
  { type: "stdinAck", id: 3, bytes: 65536 },
  { type: "fileInfo", id: 6, mode: 0o644, size: 5 * 2 ** 32 + 7 },
  { type: "ok", id: 5 },
  { type: "ready", id: 0, version: 1 },
  { type: "error", id: 9, code: 2, message: "read /x: No such file or directory" },
];

function messages(events: DecodeEvent[]): Message[] {
  return events.flatMap((e) => (e.kind === "message" ? [e.message] : []));
}

/** Compares decoded messages with Uint8Array/Buffer fields normalised. */
function plain(m: Message): unknown {
  return Object.fromEntries(
    Object.entries(m).map(([k, v]) => [k, v instanceof Uint8Array ? Buffer.from(v).toString("hex") : (v as unknown)]),
  );
}

describe("agent protocol codec", () => {
  test("every message type survives encode and decode unchanged", () => {
    for (const m of samples) {
      const got = messages(new FrameDecoder().push(encodeMessage(m)));
      assert.equal(got.length, 1, m.type);
      assert.deepEqual(plain(got[0] as Message), plain(m), m.type);
    }
  });

  test("a frame's bytes are the documented header followed by the payload", () => {
    const frame = encodeMessage({ type: "ping", id: 0x01020304, data: bytes("hi") });
    assert.deepEqual([...frame], [0xf7, 0x56, 0x02, 0x00, 1, 2, 3, 4, 0, 0, 0, 2, 0x68, 0x69]);
    const exec = encodeMessage({
      type: "exec", id: 1, shell: true, stdin: true, clearEnv: false, timeoutMs: 256, graceMs: 0, cwd: "/", argv: ["x"], env: [],
    });
    assert.equal(
      exec.subarray(HEADER_SIZE).toString("hex"),
      "00000003" + "00000100" + "00000000" + "000000012f" + "00000001" + "0000000178" + "00000000",
    );
  });

  test("decode() reassembles a frame delivered one byte at a time", () => {
    const d = new FrameDecoder();
    const frame = encodeMessage(samples[3] as Encodable);
    const events: DecodeEvent[] = [];
    for (const b of frame) events.push(...d.push(Uint8Array.of(b)));
    assert.deepEqual(messages(events).map(plain), [plain(samples[3] as Message)]);
    assert.equal(d.pending, 0);
  });

  test("decode() splits two frames delivered in one chunk, and a third split across chunks", () => {
    const d = new FrameDecoder();
    const a = encodeMessage({ type: "ok", id: 1 });
    const b = encodeMessage({ type: "stdout", id: 2, data: bytes("xyz") });
    const c = encodeMessage({ type: "ok", id: 3 });
    const first = d.push(Buffer.concat([a, b, c.subarray(0, 5)]));
    assert.deepEqual(messages(first).map((m) => m.id), [1, 2]);
    assert.equal(d.pending, 5);
    assert.deepEqual(messages(d.push(c.subarray(5))).map((m) => m.id), [3]);
  });

  test("garbage before a frame is skipped, reported once, and the frame still decodes", () => {
    const d = new FrameDecoder();
    const events = d.push(Buffer.concat([Buffer.from("console noise\n"), encodeMessage({ type: "ok", id: 7 })]));
    assert.deepEqual(events[0], { kind: "garbage", bytes: 14 });
    assert.deepEqual(messages(events).map((m) => m.id), [7]);
  });

  test("a lone magic byte at the end of a chunk waits for the next chunk", () => {
    const d = new FrameDecoder();
    const frame = encodeMessage({ type: "ok", id: 8 });
    const events = d.push(Buffer.concat([Buffer.from("zz"), frame.subarray(0, 1)]));
    assert.deepEqual(events, [{ kind: "garbage", bytes: 2 }]);
    assert.deepEqual(messages(d.push(frame.subarray(1))).map((m) => m.id), [8]);
  });

  test("a header announcing more than MAX_PAYLOAD is reported and decoding resumes", () => {
    const d = new FrameDecoder();
    const huge = Buffer.from([0xf7, 0x56, 0x44, 0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
    const events = d.push(Buffer.concat([huge, encodeMessage({ type: "ok", id: 9 })]));
    assert.deepEqual(events[0], { kind: "oversize", id: 5, length: 0xffffffff });
    assert.deepEqual(messages(events).map((m) => m.id), [9]);
  });

  test("an unknown frame type decodes to invalid instead of throwing", () => {
    const [m] = messages(new FrameDecoder().push(encodeFrame(0x33, 4, bytes("?"))));
    assert.equal(m?.type, "invalid");
    assert.match(m?.type === "invalid" ? m.reason : "", /unknown frame type 0x33/);
  });

  test("malformed payloads decode to invalid: truncated, overlong strings, trailing bytes, bad enums", () => {
    const cases: Array<[number, Buffer]> = [
      [FRAME_TYPES.started, Buffer.from([0, 1])],
      [FRAME_TYPES.readFile, Buffer.from([0, 0, 0, 9, 0x41])],
      [FRAME_TYPES.ok, Buffer.from([1])],
      [FRAME_TYPES.power, Buffer.from([0, 0, 0, 7])],
      // REFRESH: nanoseconds out of range, then a seed too short
      [FRAME_TYPES.refresh, Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 1, 0x3b, 0x9a, 0xca, 0x00]), Buffer.alloc(16)])],
      [FRAME_TYPES.refresh, Buffer.concat([Buffer.alloc(12), Buffer.alloc(15)])],
      [FRAME_TYPES.exec, Buffer.from([0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
      [FRAME_TYPES.exec, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff])],
      [FRAME_TYPES.readFile, Buffer.from([0, 0, 0, 3, 0x61, 0, 0x62])],
    ];
    for (const [type, payload] of cases) {
      const m = decodePayload(type, 1, payload);
      assert.equal(m.type, "invalid", `type 0x${type.toString(16)} payload ${payload.toString("hex")}`);
    }
  });

  test("a non-zero reserved header byte makes the frame invalid without losing sync", () => {
    const bad = encodeMessage({ type: "ok", id: 1 });
    bad[3] = 1;
    const ms = messages(new FrameDecoder().push(Buffer.concat([bad, encodeMessage({ type: "ok", id: 2 })])));
    assert.deepEqual(ms.map((m) => [m.type, m.id]), [["invalid", 1], ["ok", 2]]);
  });

  test("random bytes never make the decoder throw", () => {
    let seed = 12345;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff;
    const d = new FrameDecoder();
    for (let i = 0; i < 200; i++) {
      const chunk = Buffer.from(Array.from({ length: 1 + (rand() % 64) }, rand));
      if (i % 7 === 0) chunk[0] = 0xf7;
      if (i % 7 === 0 && chunk.length > 1) chunk[1] = 0x56;
      d.push(chunk);
    }
    d.reset();
    assert.deepEqual(messages(d.push(encodeMessage({ type: "ok", id: 3 }))).map((m) => m.id), [3]);
  });

  test("encodeFrame refuses a payload over MAX_PAYLOAD", () => {
    assert.throws(() => encodeFrame(FRAME_TYPES.stdout, 1, new Uint8Array(MAX_PAYLOAD + 1)), RangeError);
  });

  test("signal numbers map to Linux names and back", () => {
    assert.equal(signalName(9), "SIGKILL");
    assert.equal(signalName(15), "SIGTERM");
    assert.equal(signalName(35), "SIGRTMIN+1");
    assert.equal(signalNumber("SIGINT"), 2);
    assert.equal(signalNumber("SIGNOPE"), undefined);
  });
});
