/**
 * Per-domain quotas (notes §1.9; C xenstored 4.17 `CONTROL quota`, HEAD `domain.c quotas[]`).
 * They apply to unprivileged domains only; dom0 and socket connections are exempt. 0 disables one.
 * Names are those of GET_QUOTA/SET_QUOTA and of the C daemon's `-Q what=n` option.
 */
import { xsError } from "./errors.js";

export interface Quotas {
  /** Nodes owned by one domain (C `-E`, "nodes"). */
  readonly nodes: number;
  /** Bytes of one node: value plus permission entries (C `-S`, "node-size"). */
  readonly "node-size": number;
  /** Watches per domain (C `-W`, "watches"). */
  readonly watches: number;
  /** Open transactions per domain (C `-t`, "transactions"). */
  readonly transactions: number;
  /** Requests whose replies (and events) the domain has not read yet (C `-A`, XSA-326). */
  readonly outstanding: number;
  /** Nodes accessed by one transaction (C "transaction-nodes", XSA-326). */
  readonly "transaction-nodes": number;
  /** Path length below a domain's home (C "path-max"; applies to every connection, as observed). */
  readonly "path-max": number;
  /** Permission entries per node (C "permissions"). */
  readonly permissions: number;
}

export const DEFAULT_QUOTAS: Quotas = Object.freeze({
  nodes: 1000,
  "node-size": 2048,
  watches: 128,
  transactions: 10,
  outstanding: 20,
  "transaction-nodes": 1024,
  "path-max": 2048,
  permissions: 5,
});

export type QuotaName = keyof Quotas;

export const QUOTA_NAMES: readonly QuotaName[] = Object.keys(DEFAULT_QUOTAS) as QuotaName[];

export function isQuotaName(s: string): s is QuotaName {
  return (QUOTA_NAMES as readonly string[]).includes(s);
}

/** Parse `what=n` pairs (CLI) into overrides; throws a usage-level error on anything unknown. */
export function parseQuotaOverrides(specs: readonly string[]): Partial<Quotas> {
  const out: Partial<Record<QuotaName, number>> = {};
  for (const spec of specs) {
    const m = /^([a-z-]+)=(\d+)$/.exec(spec);
    if (!m || !isQuotaName(m[1]!)) {
      throw xsError("EINVAL", `bad quota '${spec}': expected NAME=N with NAME one of ${QUOTA_NAMES.join(", ")}`);
    }
    out[m[1]] = Number(m[2]);
  }
  return out;
}

/** True if `used` exceeds a quota value (0 = unlimited). */
export function overQuota(limit: number, used: number): boolean {
  return limit > 0 && used > limit;
}

/**
 * Write rate limiting for unprivileged domains (XSA-206: one client's stream of writes must not
 * starve other clients' transactions into endless EAGAIN). A token bucket per domain: each
 * modifying request (WRITE, MKDIR, RM, SET_PERMS, TRANSACTION_END) takes a token; when the bucket
 * is empty the domain's connection is not read until a token is back (requests are delayed, never
 * failed — as the C daemon's rate limiter does). Pure: the clock is injected.
 */
export interface WriteRate {
  /** Sustained modifying requests per second (0 = unlimited). */
  readonly perSecond: number;
  /** Requests allowed in a burst. */
  readonly burst: number;
}

export const DEFAULT_WRITE_RATE: WriteRate = Object.freeze({ perSecond: 1000, burst: 200 });

export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    readonly rate: WriteRate,
    now: number,
  ) {
    this.#tokens = rate.burst;
    this.#last = now;
  }

  /** Take one token; 0 if granted, else the milliseconds until one is available. */
  take(now: number): number {
    if (this.rate.perSecond <= 0) return 0;
    this.#tokens = Math.min(this.rate.burst, this.#tokens + ((now - this.#last) * this.rate.perSecond) / 1000);
    this.#last = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.#tokens) * 1000) / this.rate.perSecond);
  }
}
