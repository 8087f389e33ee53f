import { test } from "node:test";
import assert from "node:assert/strict";
import { FrameDecoder, encodeMessage, decodeOne, frameOf, latin1Of, strictArgs, splitNul, nulTerminated, pathAndValue, errorPayload, utf8Of } from "../../src/xenstore/wire.js";
import { XS_OPS, XS_ERRORS, opOf, XENSTORE_PAYLOAD_MAX, XS_TYPE_COUNT } from "../../src/xenstore/protocol.js";
import { isVmstackError } from "../../src/lib/errors.js";

void test("the op table has the xs_wire.h numbers", () => {
  assert.equal(XS_OPS.CONTROL, 0);
  assert.equal(XS_OPS.WATCH_EVENT, 15);
  assert.equal(XS_OPS.ERROR, 16);
  assert.equal(XS_OPS.SET_TARGET, 19);
  assert.equal(XS_OPS.RESET_WATCHES, 21);
  assert.equal(XS_OPS.DIRECTORY_PART, 22);
  assert.equal(XS_OPS.SET_QUOTA, 26);
  assert.equal(XS_TYPE_COUNT, 27);
  assert.equal(XS_OPS.INVALID, 0xffff);
});

void test("unknown type numbers and the removed RESTRICT decode to INVALID", () => {
  assert.equal(opOf(20), "INVALID");
  assert.equal(opOf(99), "INVALID");
  assert.equal(opOf(0xffffffff), "INVALID");
  assert.equal(opOf(2), "READ");
});

void test("error names are in xsd_errors order", () => {
  assert.deepEqual(XS_ERRORS.slice(0, 3), ["EINVAL", "EACCES", "EEXIST"]);
  assert.equal(XS_ERRORS[XS_ERRORS.length - 1], "EPERM");
  assert.equal(XS_ERRORS.indexOf("EAGAIN"), 12);
  assert.deepEqual(errorPayload("ENOENT"), Buffer.from("ENOENT\0"));
});

void test("encodeMessage writes a little-endian header and the payload", () => {
  const b = encodeMessage({ type: "READ", reqId: 7, txId: 3, payload: "/a\0" });
  assert.equal(b.length, 19);
  assert.equal(b.readUInt32LE(0), 2);
  assert.equal(b.readUInt32LE(4), 7);
  assert.equal(b.readUInt32LE(8), 3);
  assert.equal(b.readUInt32LE(12), 3);
  assert.equal(b.subarray(16).toString(), "/a\0");
});

void test("frameOf frames short and long payloads, with ids up to 2^32 - 1, and the decoder reads them back", () => {
  for (const payload of [Buffer.alloc(0), Buffer.from("OK\0"), Buffer.alloc(300, 0xa5)]) {
    const b = frameOf(0xfffffffe, 0xffffffff, 0x80000001, payload);
    assert.deepEqual([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8), b.readUInt32LE(12)], [0xfffffffe, 0xffffffff, 0x80000001, payload.length]);
    assert.deepEqual(b.subarray(16), payload);
    const m = decodeOne(frameOf(2, 0xffffffff, 0x80000001, payload))!;
    assert.deepEqual([m.op, m.reqId, m.txId, m.payload], ["READ", 0xffffffff, 0x80000001, payload]);
  }
});

void test("utf8Of and latin1Of read a payload's bytes as toString does", () => {
  const b = Buffer.concat([Buffer.from("/é/x\0", "utf8"), Buffer.from([0, 1, 0x7f, 0x80, 0xff])]);
  for (const [s, e] of [[0, b.length], [0, 5], [3, 9], [4, 4]] as const) {
    assert.equal(utf8Of(b, s, e), b.toString("utf8", s, e));
    assert.equal(latin1Of(b, s, e), b.toString("latin1", s, e));
  }
});

void test("encodeMessage refuses a payload over 4096 bytes unless told otherwise", () => {
  assert.throws(() => encodeMessage({ type: 11, payload: Buffer.alloc(XENSTORE_PAYLOAD_MAX + 1) }), (e) => isVmstackError(e, "XS_E2BIG"));
  assert.equal(encodeMessage({ type: 11, payload: Buffer.alloc(XENSTORE_PAYLOAD_MAX) }).length, 16 + 4096);
  assert.equal(encodeMessage({ type: 11, payload: Buffer.alloc(5000) }, { maxPayload: Infinity }).length, 16 + 5000);
});

void test("the decoder splits two frames delivered in one chunk", () => {
  const d = new FrameDecoder();
  const r = d.push(Buffer.concat([encodeMessage({ type: 2, reqId: 1, payload: "/a\0" }), encodeMessage({ type: 1, reqId: 2, payload: "/\0" })]));
  assert.equal(r.length, 2);
  assert.ok(r[0]?.kind === "message" && r[0].message.op === "READ" && r[0].message.reqId === 1);
  assert.ok(r[1]?.kind === "message" && r[1].message.op === "DIRECTORY" && r[1].message.payload.toString() === "/\0");
});

void test("the decoder joins a frame split byte by byte", () => {
  const frame = encodeMessage({ type: 11, reqId: 9, txId: 4, payload: "/x\0value" });
  const d = new FrameDecoder();
  const got = [];
  for (const byte of frame) got.push(...d.push(Buffer.from([byte])));
  assert.equal(got.length, 1);
  const m = got[0];
  assert.ok(m?.kind === "message");
  assert.equal(m.message.txId, 4);
  assert.equal(m.message.payload.toString(), "/x\0value");
  assert.equal(d.buffered, 0);
});

void test("the decoder reports an oversized length and then stops", () => {
  const d = new FrameDecoder();
  const hdr = Buffer.alloc(16);
  hdr.writeUInt32LE(2, 0);
  hdr.writeUInt32LE(0xffffffff, 12);
  const r = d.push(Buffer.concat([encodeMessage({ type: 2, payload: "/\0" }), hdr]));
  assert.equal(r.length, 2);
  assert.equal(r[1]?.kind, "oversized");
  assert.ok(d.dead);
  assert.deepEqual(d.push(encodeMessage({ type: 2, payload: "/\0" })), []);
});

void test("the decoder turns an unknown type into an INVALID op instead of throwing", () => {
  const m = decodeOne(encodeMessage({ type: 1234, payload: "x" }));
  assert.equal(m?.op, "INVALID");
  assert.equal(m?.type, 1234);
});

void test("strictArgs accepts exactly n NUL-terminated strings, as the C daemon's onearg()", () => {
  assert.deepEqual(strictArgs(Buffer.from("/a\0"), 1), ["/a"]);
  assert.equal(strictArgs(Buffer.from("/a"), 1), undefined);
  assert.equal(strictArgs(Buffer.from("/a\0extra\0"), 1), undefined);
  assert.deepEqual(strictArgs(Buffer.from("1\0" + "2\0"), 2), ["1", "2"]);
  assert.equal(strictArgs(Buffer.alloc(0), 1), undefined);
  assert.deepEqual(splitNul(nulTerminated("a", "b")), ["a", "b"]);
});

void test("request payloads are built byte for byte: NUL after each argument, WRITE's value unterminated, UTF-8 and binary kept", () => {
  assert.deepEqual(nulTerminated(), Buffer.alloc(0));
  assert.deepEqual(nulTerminated("/a", "", Buffer.from([1, 0, 255]), "é"), Buffer.from([0x2f, 0x61, 0, 0, 1, 0, 255, 0, 0xc3, 0xa9, 0]));
  assert.deepEqual(pathAndValue("/dé", "vé"), Buffer.from("/dé\0vé", "utf8"));
  assert.deepEqual(pathAndValue("/b", Buffer.from([0, 255])), Buffer.from([0x2f, 0x62, 0, 0, 255]));
  assert.deepEqual(pathAndValue("/e", ""), Buffer.from("/e\0"));
});
