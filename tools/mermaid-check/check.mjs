#!/usr/bin/env node
// Checks Mermaid diagrams with the real Mermaid library (mermaid.parse), as GitHub renders them.
//
//   node check.mjs FILE...        each FILE holds one diagram, or Markdown with ```mermaid blocks
//   node check.mjs --json < IN    IN is a JSON array of diagram texts; prints a JSON array of
//                                 {"ok": true, "type": ...} or {"ok": false, "error": ...}
//
// Exits 0 when every diagram parses, 1 when one does not, 2 on bad usage.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

// Mermaid sanitizes labels with DOMPurify, which needs a window: give it jsdom's.
const { window } = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = window;
globalThis.document = window.document;
globalThis.DOMParser = window.DOMParser;
globalThis.Element = window.Element;
globalThis.HTMLElement = window.HTMLElement;

const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });

function blocks(text) {
  const found = [...text.matchAll(/```mermaid\n([\s\S]*?)```/g)].map((m) => m[1]);
  return found.length ? found : [text];
}

async function check(text) {
  try {
    const result = await mermaid.parse(text);
    return { ok: true, type: result.diagramType };
  } catch (err) {
    return { ok: false, error: String(err && err.message ? err.message : err) };
  }
}

const args = process.argv.slice(2);
if (args.length === 0) {
  process.stderr.write("usage: check.mjs FILE... | check.mjs --json < diagrams.json\n");
  process.exit(2);
}
if (args[0] === "--json") {
  const diagrams = JSON.parse(readFileSync(0, "utf8"));
  const results = [];
  for (const d of diagrams) results.push(await check(d));
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(results.every((r) => r.ok) ? 0 : 1);
}
let failed = 0;
for (const file of args) {
  const all = blocks(readFileSync(file, "utf8"));
  for (const [i, d] of all.entries()) {
    const r = await check(d);
    if (r.ok) {
      process.stdout.write(`${file} #${i + 1}: ok (${r.type})\n`);
    } else {
      failed += 1;
      process.stdout.write(`${file} #${i + 1}: ${r.error}\n`);
    }
  }
}
process.exit(failed ? 1 : 0);
