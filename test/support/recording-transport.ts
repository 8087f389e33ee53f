/**
 * A transport for `Xenstored.attach` that records each piece the daemon writes: `onPiece` gets the
 * number of frames in it (a corked batch arrives as one piece of many). Input is `push`ed by the test.
 */
import { Duplex } from "node:stream";

export function recordingTransport(onPiece: (frames: number) => void): Duplex {
  return new Duplex({
    read() {},
    writev(chunks, cb) {
      onPiece(chunks.length);
      cb();
    },
    write(_chunk, _enc, cb) {
      onPiece(1);
      cb();
    },
  });
}
