import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { BusyPoll, type BusyPollClock } from "../../src/lib/busy-poll.js";
import { connectXenstore } from "../../src/xenstore/client.js";
import { createXenstored, listenUnix } from "../../src/xenstore/index.js";

/** A clock whose time moves only when told, and whose deferred calls run only when told. */
function fakeClock(): BusyPollClock & { t: number; pending: (() => void)[]; advance(ms: number): void } {
  const c = {
    t: 0,
    pending: [] as (() => void)[],
    now: () => c.t,
    defer: (fn: () => void) => c.pending.push(fn),
    /** Move time forward in 1 µs poll iterations, running deferred polls as the event loop would. */
    advance(ms: number): void {
      const end = c.t + ms;
      while (c.t < end) {
        c.t = Math.min(end, c.t + 0.001);
        for (const fn of c.pending.splice(0)) fn();
      }
    },
  };
  return c;
}

void test("busy-poll: a request starts polling, which stops once the window has passed", () => {
  const clock = fakeClock();
  const p = new BusyPoll(200, clock);
  p.kick();
  assert.ok(p.polling);
  clock.advance(0.15);
  assert.ok(p.polling, "still polling 150 µs after the request");
  clock.advance(0.06);
  assert.ok(!p.polling, "stopped 210 µs after it");
});

void test("busy-poll: requests that arrive while polling are hits and keep the window at its maximum", () => {
  const clock = fakeClock();
  const p = new BusyPoll(200, clock);
  for (let i = 0; i < 50; i++) {
    p.kick();
    clock.advance(0.03); // a client that answers in 30 µs
  }
  assert.equal(p.hits, 49);
  assert.equal(p.misses, 0);
  assert.equal(p.windowUs, 200);
});

void test("busy-poll: long quiet spells shrink the window to nothing, and close requests grow it back", () => {
  const clock = fakeClock();
  const p = new BusyPoll(200, clock);
  for (let i = 0; i < 6; i++) {
    p.kick();
    clock.advance(5); // one request every 5 ms: polling never catches one
  }
  assert.equal(p.windowUs, 0, "a mostly idle server stops polling");
  assert.ok(p.misses >= 5);
  p.kick();
  assert.ok(!p.polling, "no polling after an isolated request");
  // A burst of requests 20 µs apart: the window grows again and polling resumes.
  for (let i = 0; i < 10; i++) {
    clock.advance(0.02);
    p.kick();
  }
  assert.ok(p.polling);
  assert.equal(p.windowUs, 200);
});

void test("busy-poll: a request that finds the poll armed but past its window (the loop was busy elsewhere) is no hit", () => {
  const clock = fakeClock();
  const p = new BusyPoll(200, clock);
  p.kick();
  clock.t += 5; // 5 ms pass without the event loop running the poll's check
  p.kick();
  assert.equal(p.hits, 0);
  assert.equal(p.misses, 1);
  assert.equal(p.windowUs, 100);
});

void test("busy-poll: no polling for a client on this CPU; a poll under way ends at its next turn, and polling resumes with the window kept once the client runs elsewhere", () => {
  let beside = false;
  const clock = Object.assign(fakeClock(), { beside: () => beside });
  const p = new BusyPoll(200, clock);
  // Requests 5 ms apart shrink the window: 200, then 100, then 50 µs.
  for (let i = 0; i < 3; i++) {
    if (i > 0) clock.advance(5);
    p.kick();
  }
  assert.equal(p.windowUs, 50);
  assert.equal(p.misses, 2);
  assert.ok(p.polling);
  // The client moves onto this CPU while a poll is under way.
  beside = true;
  p.kick();
  assert.equal(p.beside, 1);
  clock.advance(0.002);
  assert.ok(!p.polling, "the poll under way stopped at its next turn");
  // Requests 30 µs apart for 0.3 ms, longer than the maximum window.
  for (let i = 0; i < 10; i++) {
    clock.advance(0.03);
    p.kick();
    assert.ok(!p.polling, "requests from a client beside this thread start no poll");
  }
  assert.equal(p.beside, 11);
  assert.equal(p.hits, 0, "those requests are neither hits");
  assert.equal(p.misses, 2, "nor misses");
  beside = false;
  clock.advance(0.03);
  p.kick();
  assert.ok(p.polling, "the client runs elsewhere again: polling resumes");
  // The last request beside counts as activity: 30 µs later is no quiet spell, so the window
  // doubles from where it was (a miss would have halved it).
  assert.equal(p.windowUs, 100);
  assert.equal(p.misses, 2);
});

void test("busy-poll: a maximum of 0 never polls", () => {
  const clock = fakeClock();
  const p = new BusyPoll(0, clock);
  p.kick();
  p.kick();
  assert.ok(!p.polling);
  assert.equal(clock.pending.length, 0);
});

void test("xenstored's socket busy-polls after requests, so a client with one request in flight is caught polling; --busy-poll-us 0 never is", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-poll-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const busyPollUs of [200, 0]) {
    const daemon = createXenstored({});
    const server = await listenUnix(daemon, join(dir, `socket-${busyPollUs}`), { busyPollUs });
    const c = await connectXenstore({ socket: server.path, reconnect: false });
    try {
      // The client's next request comes tens of µs after each reply, so it is caught polling; on a
      // loaded machine some round trips take longer, so allow many requests for the first hit.
      let i = 0;
      for (; i < 300 || (busyPollUs > 0 && server.poll.hits === 0 && i < 20_000); i++) await c.write(`/poll/k${i % 10}`, String(i));
      if (busyPollUs === 0) assert.equal(server.poll.hits, 0, "--busy-poll-us 0 turns polling off");
      else assert.ok(server.poll.hits > 0, `no hit in ${i} requests (misses ${server.poll.misses})`);
    } finally {
      await c.close();
      daemon.close();
      await server.close();
    }
  }
});

void test("xenstored polls per client: many clients that each send now and then are not polled for, though requests of others arrive in between", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-poll-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const daemon = createXenstored({});
  const server = await listenUnix(daemon, join(dir, "socket"), { busyPollUs: 200 });
  const clients = await Promise.all(Array.from({ length: 10 }, () => connectXenstore({ socket: server.path, reconnect: false })));
  try {
    // Each guest writes every 2 ms (ten times the window), all ten at once: bursts of ten requests
    // every ~2 ms, so requests from other clients arrive while a client's window would be open.
    await Promise.all(
      clients.map(async (c, k) => {
        for (let i = 0; i < 10; i++) {
          await c.write(`/guest${k}/stat`, String(i));
          await sleep(2);
        }
      }),
    );
    assert.equal(server.poll.hits, 0, "no client's own next request came while polling for it");
    assert.ok(server.poll.misses >= 10, `misses ${server.poll.misses}`);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    daemon.close();
    await server.close();
  }
});
