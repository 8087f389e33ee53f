/**
 * Tokens of xl.cfg(5) files and of the Python subset old xm configs use.
 *
 * xl.cfg(5): `KEY = VALUE` per line or `;`-separated; values are strings in double or single
 * quotes with C-style escapes, numbers (decimal, 0-prefixed octal, 0x hex), or `[lists]` that may
 * span lines; `#` starts a comment. xm configs are Python, so on top of that: `import` lines,
 * `+` concatenation, names of earlier settings and of Xen's path constants, True/False, triple-
 * quoted strings and backslash line continuations.
 */
import type { Position } from "./diagnostics.js";

export type TokenKind = "ident" | "string" | "number" | "punct" | "newline" | "eof";

export interface Token {
  readonly kind: TokenKind;
  /** Source text (for punctuation: the punctuation itself; for strings: the decoded value). */
  readonly text: string;
  readonly value?: number;
  readonly pos: Position;
}

export interface LexError {
  readonly message: string;
  readonly pos: Position;
}

const PUNCT = ["+=", "=", "[", "]", ",", ";", "+", "*", "(", ")", "."] as const;

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  "\\": "\\",
  "'": "'",
  '"': '"',
  a: "\x07",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
};

/** Tokenize a whole file. Errors are collected; the lexer skips the bad character and goes on. */
export function tokenize(text: string): { tokens: Token[]; errors: LexError[] } {
  const tokens: Token[] = [];
  const errors: LexError[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const pos = (at: number): Position => ({ line, col: at - lineStart + 1 });
  const newline = (at: number): void => {
    line++;
    lineStart = at + 1;
  };

  while (i < text.length) {
    const ch = text[i] as string;
    if (ch === " " || ch === "\t" || ch === "\r" || ch === "\f") {
      i++;
    } else if (ch === "\n") {
      tokens.push({ kind: "newline", text: "\n", pos: pos(i) });
      newline(i);
      i++;
    } else if (ch === "#") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (ch === "\\" && (text[i + 1] === "\n" || (text[i + 1] === "\r" && text[i + 2] === "\n"))) {
      // Python line continuation.
      i += text[i + 1] === "\r" ? 2 : 1;
      newline(i);
      i++;
    } else if (/[A-Za-z_]/.test(ch)) {
      const start = i;
      while (i < text.length && /[A-Za-z0-9_]/.test(text[i] as string)) i++;
      // Python raw-string prefix r'…' / R"…": escapes are kept verbatim.
      if (i - start === 1 && (ch === "r" || ch === "R") && (text[i] === "'" || text[i] === '"')) {
        const s = readString(text, i, true);
        tokens.push({ kind: "string", text: s.value, pos: pos(start) });
        for (const nl of s.newlines) newline(nl);
        if (s.error) errors.push({ message: s.error.message, pos: s.error.pos ?? pos(start) });
        i = s.end;
        continue;
      }
      tokens.push({ kind: "ident", text: text.slice(start, i), pos: pos(start) });
    } else if (/[0-9]/.test(ch)) {
      const start = i;
      while (i < text.length && /[0-9A-Za-z_.]/.test(text[i] as string)) i++;
      const raw = text.slice(start, i);
      const value = parseNumber(raw);
      if (value === undefined) errors.push({ message: `malformed number '${raw}' (expected decimal, 0-prefixed octal or 0x hex)`, pos: pos(start) });
      tokens.push({ kind: "number", text: raw, value: value ?? 0, pos: pos(start) });
    } else if (ch === '"' || ch === "'") {
      const start = i;
      const startPos = pos(start);
      const lineBefore = line;
      const s = readString(text, i, false);
      for (const nl of s.newlines) newline(nl);
      if (s.error) {
        const p = s.error.pos ?? startPos;
        errors.push({ message: s.error.message, pos: s.error.relative ? { line: lineBefore + p.line - 1, col: p.line === 1 ? startPos.col + p.col - 1 : p.col } : p });
      }
      tokens.push({ kind: "string", text: s.value, pos: startPos });
      i = s.end;
    } else {
      const p = PUNCT.find((x) => text.startsWith(x, i));
      if (p === undefined) {
        errors.push({ message: `unexpected character '${ch}'`, pos: pos(i) });
        i++;
      } else {
        tokens.push({ kind: "punct", text: p, pos: pos(i) });
        i += p.length;
      }
    }
  }
  tokens.push({ kind: "eof", text: "end of file", pos: pos(i) });
  return { tokens, errors };
}

/** strtoul(…, 0) rules, as xl reads numbers: 0x hex, leading-0 octal, else decimal. */
export function parseNumber(raw: string): number | undefined {
  if (/^0[xX][0-9a-fA-F]+$/.test(raw)) return parseInt(raw.slice(2), 16);
  if (/^0[0-7]+$/.test(raw)) return parseInt(raw.slice(1), 8);
  if (/^(0|[1-9][0-9]*)$/.test(raw)) return parseInt(raw, 10);
  return undefined;
}

interface StringRead {
  value: string;
  end: number;
  /** Offsets of newlines inside the literal (triple-quoted strings), for line counting. */
  newlines: number[];
  error?: { message: string; pos?: Position; relative?: boolean };
}

function readString(text: string, start: number, raw: boolean): StringRead {
  const quote = text[start] as string;
  const triple = text.startsWith(quote.repeat(3), start);
  const close = triple ? quote.repeat(3) : quote;
  let i = start + close.length;
  let value = "";
  const newlines: number[] = [];
  // Relative position (line within the literal, col) of an error, resolved by the caller.
  let relLine = 1;
  let relLineStart = start;
  const rel = (at: number): Position => ({ line: relLine, col: at - relLineStart + 1 });
  while (i < text.length) {
    if (text.startsWith(close, i)) return { value, end: i + close.length, newlines };
    const ch = text[i] as string;
    if (ch === "\n") {
      if (!triple) return { value, end: i, newlines, error: { message: `unterminated string: expected closing ${quote} before the end of the line`, pos: rel(start), relative: true } };
      newlines.push(i);
      relLine++;
      relLineStart = i + 1;
      value += ch;
      i++;
      continue;
    }
    if (ch !== "\\" || raw) {
      value += ch;
      i++;
      continue;
    }
    const e = text[i + 1];
    if (e === undefined) break;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) {
      value += simple;
      i += 2;
    } else if (e === "x" && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 2, i + 4))) {
      value += String.fromCharCode(parseInt(text.slice(i + 2, i + 4), 16));
      i += 4;
    } else if (/[0-7]/.test(e)) {
      const m = /^[0-7]{1,3}/.exec(text.slice(i + 1)) as RegExpExecArray;
      value += String.fromCharCode(parseInt(m[0], 8));
      i += 1 + m[0].length;
    } else if (e === "\n" && triple) {
      newlines.push(i + 1);
      relLine++;
      relLineStart = i + 2;
      i += 2;
    } else {
      return skipToClose(text, i, close, value, newlines, { message: `unknown escape '\\${e === "\n" ? "newline" : e}' in string (expected one of \\\\ \\' \\" \\n \\t \\r \\a \\b \\f \\v \\xHH \\OOO)`, pos: rel(i), relative: true });
    }
  }
  return { value, end: text.length, newlines, error: { message: `unterminated string: expected closing ${close} before the end of the file`, pos: rel(start), relative: true } };
}

/** After a bad escape, resynchronise at the closing quote so one mistake is one error. */
function skipToClose(text: string, from: number, close: string, value: string, newlines: number[], error: NonNullable<StringRead["error"]>): StringRead {
  let i = from + 2;
  while (i < text.length && !text.startsWith(close, i) && text[i] !== "\n") i += text[i] === "\\" ? 2 : 1;
  return { value, end: text.startsWith(close, i) ? i + close.length : i, newlines, error };
}
