/**
 * JSON.parse with positions: the same values, plus the line:col of every key path, so that
 * problems in a JSON domain file point into the file like those of an xl.cfg do.
 * RFC 8259 grammar; errors say line:col and what was expected.
 */
import type { Position } from "./diagnostics.js";
import { joinPath } from "./schema.js";

export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly pos: Position,
  ) {
    super(message);
  }
}

export function parseJsonWithPositions(text: string): { value: unknown; positions: Map<string, Position> } {
  const positions = new Map<string, Position>();
  let i = 0;
  const posAt = (at: number): Position => {
    let line = 1;
    let start = 0;
    for (let k = 0; k < at; k++) if (text[k] === "\n") (line++, (start = k + 1));
    return { line, col: at - start + 1 };
  };
  const fail = (what: string): never => {
    const found = i >= text.length ? "end of file" : `'${text[i] ?? ""}'`;
    throw new JsonSyntaxError(`expected ${what}, found ${found}`, posAt(i));
  };
  const ws = (): void => {
    while (i < text.length && /[ \t\r\n]/.test(text[i] as string)) i++;
  };
  const str = (): string => {
    const start = i;
    if (text[i] !== '"') fail("a string");
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === "\n") fail("a closing '\"'");
      i += text[i] === "\\" ? 2 : 1;
    }
    if (i >= text.length) fail("a closing '\"'");
    i++;
    try {
      return JSON.parse(text.slice(start, i)) as string;
    } catch {
      i = start;
      return fail("a valid string (bad escape)");
    }
  };
  const value = (path: string): unknown => {
    ws();
    positions.set(path, posAt(i));
    const c = text[i];
    if (c === "{") {
      i++;
      const out: Record<string, unknown> = {};
      ws();
      if (text[i] === "}") return i++, out;
      for (;;) {
        ws();
        const keyAt = i;
        const key = str();
        ws();
        if (text[i] !== ":") fail(`':' after key "${key}"`);
        i++;
        const p = joinPath(path, key);
        out[key] = value(p);
        positions.set(p, posAt(keyAt));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") return i++, out;
        fail("',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const out: unknown[] = [];
      ws();
      if (text[i] === "]") return i++, out;
      for (;;) {
        out.push(value(joinPath(path, out.length)));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") return i++, out;
        fail("',' or ']'");
      }
    }
    if (c === '"') return str();
    const m = /^(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 64));
    if (!m) return fail("a value (object, list, string, number, true, false or null)");
    i += m[0].length;
    return JSON.parse(m[0]) as unknown;
  };
  const v = value("");
  ws();
  if (i < text.length) fail("end of file after the JSON value");
  return { value: v, positions };
}
