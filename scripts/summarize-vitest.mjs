// Prints "N passed, N failed[, N skipped]" from vitest's JSON report; exits 1
// when a test failed, a file failed to load, or nothing ran. Skipped tests are
// named first (on stderr), so a skip is never silent.
import { readFileSync } from "node:fs";

const file = process.argv[2];
let report;
try {
  report = JSON.parse(readFileSync(file, "utf8"));
} catch {
  console.log("0 passed, 1 failed");
  process.exit(1);
}
const passed = report.numPassedTests ?? 0;
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
// A file that fails to load has no test results; count it as a failure.
const brokenFiles = (report.testResults ?? []).filter((r) => r.status === "failed" && (r.assertionResults ?? []).length === 0).length;
const failed = (report.numFailedTests ?? 0) + brokenFiles;
const root = process.cwd() + "/";
for (const result of report.testResults ?? []) {
  for (const test of result.assertionResults ?? []) {
    if (test.status === "pending" || test.status === "skipped" || test.status === "todo") {
      console.error(`skipped: ${String(result.name).replace(root, "")} > ${test.fullName}`);
    }
  }
}
// The ten slowest tests, to keep an eye on the suite's length.
const timed = (report.testResults ?? []).flatMap((result) =>
  (result.assertionResults ?? []).map((test) => ({ name: `${String(result.name).replace(root, "")} > ${test.fullName}`, ms: test.duration ?? 0 })),
);
timed.sort((a, b) => b.ms - a.ms);
if (timed.length > 0) {
  console.error("slowest tests:");
  for (const test of timed.slice(0, 10)) console.error(`  ${(test.ms / 1000).toFixed(1).padStart(6)} s  ${test.name}`);
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
