#!/usr/bin/env bash
# PostgreSQL for the store tests (test/store/postgres.test.ts, test/store/equivalence.test.ts;
# sourced by test/run.sh, which provides `need_pkg` and `after`).
# Debian's package when missing; its cluster started when down (no systemd here: pg_ctlcluster);
# a role `hostkeeper_test` (LOGIN CREATEDB, password hostkeeper_test) that the tests use over
# TCP on 127.0.0.1, which works under Debian's default pg_hba (scram-sha-256) and under trust.
# Each test file creates its own database hk_test_<time>_<random> and drops it after.
# Idempotent: a running server, an existing role and a set URL are left as they are.
# HOSTKEEPER_TEST_DATABASE_URL set beforehand points the tests at another server instead.
if [ -z "${HOSTKEEPER_TEST_DATABASE_URL:-}" ]; then
  command -v pg_ctlcluster >/dev/null 2>&1 || need_pkg postgresql
  after+=(hk_provision_postgres)
fi

hk_provision_postgres() {
  local line ver name port status
  if [ "$(id -u)" != 0 ] || ! command -v pg_lsclusters >/dev/null 2>&1; then
    echo "note: PostgreSQL cannot be provisioned here; its tests will say they are skipped"
    return 0
  fi
  # An online cluster if there is one (the machine's own, say), else the first one.
  line=$(pg_lsclusters -h 2>/dev/null | awk '$4 == "online"' | head -1)
  [ -n "$line" ] || line=$(pg_lsclusters -h 2>/dev/null | head -1)
  if [ -z "$line" ]; then
    # The package normally creates a cluster; a container that blocked its post-install may not.
    ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
    [ -n "$ver" ] && pg_createcluster "$ver" main >/tmp/hostkeeper-postgres.log 2>&1
    line=$(pg_lsclusters -h 2>/dev/null | head -1)
  fi
  read -r ver name port status _ <<<"$line"
  if [ -z "$ver" ]; then
    echo "note: no PostgreSQL cluster could be made (see /tmp/hostkeeper-postgres.log); its tests will be skipped"
    return 0
  fi
  if [ "$status" != online ]; then
    pg_ctlcluster "$ver" "$name" start >>/tmp/hostkeeper-postgres.log 2>&1 \
      || { echo "note: PostgreSQL $ver/$name did not start (see /tmp/hostkeeper-postgres.log)"; return 0; }
  fi
  local i
  for i in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.2
  done
  runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >>/tmp/hostkeeper-postgres.log 2>&1 <<'SQL' \
    || { echo "note: could not make the PostgreSQL test role (see /tmp/hostkeeper-postgres.log)"; return 0; }
SELECT 'CREATE ROLE hostkeeper_test' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hostkeeper_test') \gexec
ALTER ROLE hostkeeper_test LOGIN CREATEDB PASSWORD 'hostkeeper_test';
SQL
  export HOSTKEEPER_TEST_DATABASE_URL="postgres://hostkeeper_test:hostkeeper_test@127.0.0.1:${port}/postgres"
}
