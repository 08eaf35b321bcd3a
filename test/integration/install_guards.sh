#!/usr/bin/env bash
#
# install_guards.sh — what CREATE EXTENSION flyt_instance refuses:
#
#   - a database whose encoding is not UTF8 (Kafka's JSON and the stored
#     instances are UTF-8; SQL_ASCII would store and send garbled text);
#   - an existing role flyt_web that can do more than PostgREST's anonymous
#     role may (here: LOGIN), since every HTTP request runs as it; a plain
#     NOLOGIN flyt_web (made by the extension in another database) is reused.
#
# Runs against the shared test cluster (PGHOST/PGPORT/PGUSER from
# test/run.sh), in databases of its own.  Prints ok/not ok lines and
# "N passed, M failed".
set -euo pipefail

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() {
	echo "not ok - $1"
	[ -z "${2:-}" ] || printf '#   %s\n' "$2"
	failed=$((failed + 1))
}
psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
	psql_q -d postgres -c 'DROP DATABASE IF EXISTS flyt_guard_ascii' -c 'DROP DATABASE IF EXISTS flyt_guard_role' >/dev/null 2>&1 || true
	psql_q -d postgres -c 'ALTER ROLE flyt_web NOLOGIN' >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

psql_q -d postgres -c "CREATE DATABASE flyt_guard_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
if out=$(psql_q -d flyt_guard_ascii -c 'CREATE EXTENSION flyt_instance' 2>&1); then
	not_ok "CREATE EXTENSION in a SQL_ASCII database fails" "it succeeded"
elif grep -q 'needs a database with encoding UTF8, not SQL_ASCII' <<<"$out"; then
	ok "CREATE EXTENSION in a SQL_ASCII database fails, naming the encoding"
else
	not_ok "CREATE EXTENSION in a SQL_ASCII database fails, naming the encoding" "$out"
fi
check_empty=$(psql_q -d flyt_guard_ascii -c "SELECT count(*) FROM pg_namespace WHERE nspname IN ('flyt', 'flyt_api')")
[ "$check_empty" = 0 ] && ok "and leaves nothing behind" || not_ok "and leaves nothing behind" "$check_empty schemas"

# flyt_web exists in this cluster already (made by another database's install).
psql_q -d postgres -c 'CREATE DATABASE flyt_guard_role'
psql_q -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flyt_web') THEN CREATE ROLE flyt_web NOLOGIN; END IF; END \$\$"
psql_q -d postgres -c 'ALTER ROLE flyt_web LOGIN'
if out=$(psql_q -d flyt_guard_role -c 'CREATE EXTENSION flyt_instance' 2>&1); then
	not_ok "CREATE EXTENSION with a flyt_web that can log in fails" "it succeeded"
elif grep -q 'role flyt_web exists and can do more' <<<"$out"; then
	ok "CREATE EXTENSION with a flyt_web that can log in fails, saying why"
else
	not_ok "CREATE EXTENSION with a flyt_web that can log in fails, saying why" "$out"
fi
psql_q -d postgres -c 'ALTER ROLE flyt_web NOLOGIN'
if out=$(psql_q -d flyt_guard_role -c 'CREATE EXTENSION flyt_instance' 2>&1) &&
	[ "$(psql_q -d flyt_guard_role -c "SELECT has_function_privilege('flyt_web', 'flyt_api.retry(bigint)', 'EXECUTE')")" = t ]; then
	ok "a NOLOGIN flyt_web is reused and granted the API"
else
	not_ok "a NOLOGIN flyt_web is reused and granted the API" "$out"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
