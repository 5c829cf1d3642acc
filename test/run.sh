#!/usr/bin/env bash
# The README's test command (`npm test`): typecheck, then the whole vitest suite, then the
# closing line `N passed, N failed` that CI reads (vitest does not print one).
set -uo pipefail
# Dates are written in UTC unless TZ says otherwise (contract); the tests expect UTC.
export TZ=UTC
cd "$(dirname "$0")/.."

[ -d node_modules ] || npm ci --no-audit --no-fund

# System packages and services the tests use, provisioned when missing (idempotent; needs root
# and apt). Each test/provision/*.sh says what it needs with `need_pkg NAME` (installed in one
# apt run below) and may queue steps to run after the install with `after+=(FUNCTION)`
# (starting a service, say).
need=()
need_pkg() { need+=("$@"); }
after=()
for f in test/provision/*.sh; do
  # shellcheck source=/dev/null
  . "$f"
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "provisioning: ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/tmp/hostkeeper-provision.log 2>&1 \
      || { echo "provisioning failed (see /tmp/hostkeeper-provision.log)"; tail -5 /tmp/hostkeeper-provision.log; }
  else
    echo "note: ${need[*]} missing and cannot be installed here; tests that need them will say so"
  fi
fi
# Steps a provision file queued with `after+=(function_name)`: start services and the like.
for step in "${after[@]}"; do "$step"; done

report=$(mktemp)
report2=$(mktemp)
trap 'rm -f "$report" "$report2"' EXIT

tc_failed=0
if ! npx --no-install tsc -p tsconfig.json --noEmit; then
  echo "typecheck failed"
  tc_failed=1
fi

# Everything but test/cluster/ (vitest.config.ts excludes it), files in parallel; then the
# several-controllers tests alone: they time takeovers (<15 s) that a busy neighbour on this
# 2-core machine would blur. With arguments (one file, say) only what they name runs.
status2=0
if [ "$#" -gt 0 ]; then
  HK_TEST_ALL=1 npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
  status=$?
  echo '{}' > "$report2"
else
  npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$report"
  status=$?
  HK_TEST_ALL=1 npx --no-install vitest run --reporter=default --reporter=json --outputFile.json="$report2" --no-file-parallelism test/cluster/
  status2=$?
fi

node -e '
  const fs = require("fs");
  const read = (f) => { try { return JSON.parse(fs.readFileSync(f, "utf8")); } catch { return undefined; } };
  const a = read(process.argv[1]) ?? {};
  const b = read(process.argv[2]);
  // A file that failed outside its tests (a beforeAll, an import) counts as one failure.
  const broken = (r) => (r?.testResults ?? []).filter((f) => f.status === "failed" && !(f.assertionResults ?? []).some((t) => t.status === "failed")).length;
  const passed = (a.numPassedTests ?? 0) + (b?.numPassedTests ?? 0);
  const failed = (a.numFailedTests ?? 0) + (b?.numFailedTests ?? 0) + broken(a) + broken(b) + Number(process.argv[3])
    + (a.numTotalTests === undefined ? 1 : 0) + (b === undefined ? 1 : 0);
  console.log(`${passed} passed, ${failed} failed`);
' "$report" "$report2" "$tc_failed"

[ "$status" -eq 0 ] && [ "$status2" -eq 0 ] && [ "$tc_failed" -eq 0 ]
