/**
 * A small `expect` for test scripts, so a user needs no assertion library. A mismatch throws
 * TestFailure (outcome FAILURE), naming what was expected and what was seen.
 */
import { isDeepStrictEqual, inspect } from "node:util";
import { TestFailure } from "./errors.js";

export interface Expectation {
  toBe(expected: unknown): void;
  toEqual(expected: unknown): void;
  toContain(part: unknown): void;
  toMatch(pattern: RegExp | string): void;
  toBeTruthy(): void;
  readonly not: Omit<Expectation, "not">;
}

function show(v: unknown): string {
  return inspect(v, { depth: 4, breakLength: Infinity, maxStringLength: 400 });
}

export function expect(actual: unknown): Expectation {
  const make = (negate: boolean): Omit<Expectation, "not"> => {
    const check = (ok: boolean, what: string): void => {
      if (ok === negate) throw new TestFailure(`expected ${show(actual)} ${negate ? "not " : ""}${what}`, { facts: { actual } });
    };
    return {
      toBe: (expected) => check(Object.is(actual, expected), `to be ${show(expected)}`),
      toEqual: (expected) => check(isDeepStrictEqual(actual, expected), `to equal ${show(expected)}`),
      toContain: (part) =>
        check(
          typeof actual === "string" ? typeof part === "string" && actual.includes(part) : Array.isArray(actual) && actual.includes(part),
          `to contain ${show(part)}`,
        ),
      toMatch: (pattern) => check(typeof actual === "string" && (typeof pattern === "string" ? actual.includes(pattern) : pattern.test(actual)), `to match ${String(pattern)}`),
      toBeTruthy: () => check(Boolean(actual), "to be truthy"),
    };
  };
  return { ...make(false), not: make(true) };
}
