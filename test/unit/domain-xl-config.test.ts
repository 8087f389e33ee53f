/** The xl.cfg(5) / xm grammar: values, quoting, numbers, lists, comments, `;`, `+=`, xm names and errors with positions. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseXlConfig, type XlValue } from "../../src/domain/index.js";

function values(text: string): Record<string, unknown> {
  const cfg = parseXlConfig(text, "t.cfg");
  assert.deepEqual(cfg.problems.filter((p) => p.severity === "error"), []);
  const plain = (v: XlValue): unknown => (v.kind === "list" ? v.items.map(plain) : v.value);
  return Object.fromEntries([...cfg.settings].map(([k, s]) => [k, plain(s.value)]));
}

function firstError(text: string): string {
  const p = parseXlConfig(text, "t.cfg").problems.find((x) => x.severity === "error");
  assert.ok(p, "expected an error");
  return `${p.origin?.line ?? 0}:${p.origin?.col ?? 0} ${p.message}`;
}

test("numbers are decimal, 0-prefixed octal or 0x hex, as strtoul(…, 0) reads them", () => {
  assert.deepEqual(values("a = 10\nb = 010\nc = 0x1F\nd = 0\n"), { a: 10, b: 8, c: 31, d: 0 });
});

test("both quote styles take C escapes, hex and octal included", () => {
  assert.deepEqual(values(`a = "x\\"y\\n\\t\\\\"\nb = 'it\\'s'\nc = "\\x41\\102\\0"\n`), { a: 'x"y\n\t\\', b: "it's", c: "AB\0" });
});

test("lists span lines, allow comments inside and a trailing comma, and may nest", () => {
  assert.deepEqual(values("l = [\n  'a', # one\n  # between\n  'b',\n]\nn = [ [1, 2], [] ]\ne = []\n"), { l: ["a", "b"], n: [[1, 2], []], e: [] });
});

test("';' separates settings and empty statements are allowed", () => {
  assert.deepEqual(values("a=1;b=2;;\n;\nc='x' ; d = 4"), { a: 1, b: 2, c: "x", d: 4 });
});

test("a later setting wins and '+=' appends to a list", () => {
  assert.deepEqual(values("a = 1\na = 2\nl = ['x']\nl += ['y', 'z']\n"), { a: 2, l: ["x", "y", "z"] });
});

test("'#' inside a string is not a comment", () => {
  assert.deepEqual(values("k = '/boot/#1' # real comment\n"), { k: "/boot/#1" });
});

test("xm: imports of xen.util.path, constants, earlier settings, concatenation, True/False, continuations", () => {
  const text = "from xen.util.path import *\nimport os\nbase = '/srv/'\nname = 'web'\nk = XENFIRMWAREDIR + '/pv-grub-x86_64.gz'\nd = [ 'file:' + base + name + '.img,xvda,w' ]\nt = True\nl = ['a'] + \\\n  ['b']\n";
  const cfg = parseXlConfig(text, "x.cfg");
  assert.equal(cfg.dialect, "xm");
  assert.deepEqual(values(text), { base: "/srv/", name: "web", k: "/usr/lib/xen/boot/pv-grub-x86_64.gz", d: ["file:/srv/web.img,xvda,w"], t: 1, l: ["a", "b"] });
});

test("a plain xl file is recognised as the xl dialect", () => {
  assert.equal(parseXlConfig("name = 'x'\n", "x.cfg").dialect, "xl");
});

test("an unknown module import warns; a constant without its import says which import is missing", () => {
  const cfg = parseXlConfig("import xen.xm.opts\nname='x'\n", "x.cfg");
  assert.match(cfg.problems[0]?.message ?? "", /import of 'xen.xm.opts' ignored/);
  assert.match(firstError("k = XEN_CONFIG_DIR\n"), /^1:5 unknown name 'XEN_CONFIG_DIR'.*add 'from xen.util.path import \*'/);
  assert.match(firstError("name = 'a'\nk = nmae\n"), /^2:5 unknown name 'nmae'.*did you mean 'name'/);
});

test("syntax errors say line:col and what was expected, and parsing resumes at the next statement", () => {
  const cfg = parseXlConfig("a = \nb 1\nc = [1 2]\nd = 'ok'\n", "e.cfg");
  const errors = cfg.problems.map((p) => `${p.origin?.line ?? 0}:${p.origin?.col ?? 0} ${p.message}`);
  assert.deepEqual(errors, [
    "1:5 expected a value (string, number or [list]), found end of line",
    "2:3 expected '=' after 'b', found '1'",
    "3:8 expected ',' or ']' in the list, found '2'",
  ]);
  assert.equal(cfg.settings.get("d")?.value.kind, "string");
});

test("lexical errors: unterminated strings, bad escapes, malformed numbers, stray characters", () => {
  assert.match(firstError("a = 'abc\n"), /^1:5 unterminated string/);
  assert.match(firstError('a = "x\\yz"\n'), /^1:7 unknown escape '\\y'/);
  assert.match(firstError("a = 0x\n"), /^1:5 malformed number '0x'/);
  assert.match(firstError("a = 12abc\n"), /^1:5 malformed number/);
  assert.match(firstError("a = $\n"), /^1:5 unexpected character '\$'/);
  assert.match(firstError("a = [1,\n2\n"), /unclosed '\['/);
});

test("positions count columns from 1 and lines across multi-line lists", () => {
  const cfg = parseXlConfig("\n  key = [\n 'a',\n    'b' ]\n", "p.cfg");
  const s = cfg.settings.get("key");
  assert.deepEqual(s?.pos, { line: 2, col: 3 });
  assert.ok(s?.value.kind === "list");
  assert.deepEqual(s.value.items[1]?.pos, { line: 4, col: 5 });
});
