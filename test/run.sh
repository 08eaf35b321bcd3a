#!/usr/bin/env bash
#
# test/run.sh — every test suite, against a throw-away cluster.  This is what
# `make test` runs after building and installing the extension.
#
#   test/run.sh                    all suites
#   test/run.sh pgtap integration  only these (regress, isolation, pgtap,
#                                  integration)
#   FLYT_INTEGRATION="deploy kafka_worker" test/run.sh integration
#                                  only these integration scripts
#
# Suites, in order; a failing suite does not stop the others:
#   regress      pg_regress:   test/sql/*.sql    vs expected/*.out
#   isolation    isolation:    test/specs/*.spec vs expected/*.out
#                (both through PGXS `make installcheck`)
#   pgtap        pg_prove on test/pgtap/*.sql, in database flyt_tap, where
#                pgtap and flyt_instance are already created
#   integration  each executable test/integration/*.sh, one suite per script
#
# The shared cluster preloads flyt_instance with flyt_instance.org_id =
# 'fintlabs.no'.  Integration scripts run from the repository root with:
#   PGHOST PGPORT PGUSER      the shared cluster (PGUSER=postgres)
#   FLYT_REPO                 the repository root
#   FLYT_CLUSTER_LIB          script/cluster.sh, to start clusters of their own
#   FLYT_FIXTURES             directory with the sample Kafka messages
#
# Each suite is bounded by FLYT_SUITE_TIMEOUT seconds (default 900).
# The last line is the summary `N passed, M failed` (N, M count suites); the
# exit status is non-zero when any suite failed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

make=${MAKE:-make}
suite_timeout=${FLYT_SUITE_TIMEOUT:-900}
diff_lines=300

# Which suites to run.
if [ "$#" -gt 0 ]; then
	for s in "$@"; do
		case $s in
		regress | isolation | pgtap | integration) ;;
		*)
			echo "usage: test/run.sh [regress|isolation|pgtap|integration]..." >&2
			exit 2
			;;
		esac
	done
	wanted=" $* "
else
	wanted=" regress isolation pgtap integration "
fi
want() { [[ $wanted == *" $1 "* ]]; }

# shellcheck source=script/cluster.sh
. "$repo/script/cluster.sh"

# The suite running now (its `timeout` process), so that Ctrl-C or a TERM
# stops it before the cluster goes away.
suite_pid=
stop_suite() {
	if [ -n "$suite_pid" ]; then
		kill -TERM "$suite_pid" 2>/dev/null || true
		wait "$suite_pid" 2>/dev/null || true
		suite_pid=
	fi
}
cluster_trap stop_suite

passed=0
failed=0
failed_names=()

# Remember the outcome of one suite.
record() {
	local name=$1 rc=$2
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		printf '=== %s: ok\n' "$name"
	else
		failed=$((failed + 1))
		failed_names+=("$name")
		if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			printf '=== %s: FAILED (timed out after %ss)\n' "$name" "$suite_timeout"
		else
			printf '=== %s: FAILED (exit %s)\n' "$name" "$rc"
		fi
	fi
}

# Run a command under the suite time limit; exit 124 when it ran out.
#
# timeout puts the suite in a process group of its own and, when time is up,
# sends TERM (KILL 30 s later) to the whole group, so a psql stuck inside a
# test script dies too and the script's own cleanup trap can run.  That group
# does not get the terminal's Ctrl-C, so the suite runs in the background
# while we `wait` (which a trapped signal interrupts at once), and our trap
# (stop_suite) hands the signal on to timeout, which passes it to the group.
# Standard input is /dev/null: a background group must not read the terminal.
bounded() {
	local rc=0
	timeout -k 30 "$suite_timeout" "$@" </dev/null &
	suite_pid=$!
	wait "$suite_pid" || rc=$?
	suite_pid=
	return "$rc"
}

# Print up to $diff_lines lines of a diff file, if there is one.
show_diffs() {
	local f=$1
	[ -s "$f" ] || return 0
	printf -- '----- %s (first %s lines) -----\n' "$f" "$diff_lines"
	head -n "$diff_lines" "$f"
	printf -- '----- end of %s -----\n' "$f"
}

shopt -s nullglob
regress_files=(test/sql/*.sql)
isolation_files=(test/specs/*.spec)
pgtap_files=(test/pgtap/*.sql)
integration_files=(test/integration/*.sh)
shopt -u nullglob
# FLYT_INTEGRATION="kafka_worker deploy": only these integration scripts.
if [ -n "${FLYT_INTEGRATION:-}" ]; then
	integration_files=()
	for t in $FLYT_INTEGRATION; do
		[ -x "test/integration/$t.sh" ] || { echo "no test/integration/$t.sh" >&2; exit 2; }
		integration_files+=("test/integration/$t.sh")
	done
fi

export FLYT_REPO=$repo
export FLYT_CLUSTER_LIB=$repo/script/cluster.sh
export FLYT_FIXTURES=${FLYT_FIXTURES:-$repo/test/fixtures}

echo "=== starting a test cluster"
cluster_create -l '' \
	-c "shared_preload_libraries = 'flyt_instance'" \
	-c "flyt_instance.org_id = 'fintlabs.no'" \
	-c "flyt_instance.kafka_config = 'message.max.bytes=33554432'" \
	-c "flyt_instance.authorized_org_id_role_pairs = '{\"vigo.no\": [\"USER\"], \"fintlabs.no\": [\"ADMIN\"], \"ofk.no\": []}'" \
	-c "max_prepared_transactions = 0"
cluster_start
cluster_env
echo "=== cluster up: PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER"

# --- pg_regress -------------------------------------------------------------
# PGXS installcheck runs REGRESS then ISOLATION; we run them one at a time by
# emptying the other list on the command line, so each is its own suite.
if want regress; then
	if [ "${#regress_files[@]}" -eq 0 ]; then
		echo "=== regress: skipped (no test/sql/*.sql yet)"
	else
		echo "=== regress: ${#regress_files[@]} test(s)"
		rm -rf results regression.diffs regression.out
		rc=0
		bounded "$make" --no-print-directory installcheck ISOLATION= || rc=$?
		[ "$rc" -eq 0 ] || show_diffs regression.diffs
		record regress "$rc"
	fi
fi

# --- isolation ----------------------------------------------------------------
if want isolation; then
	if [ "${#isolation_files[@]}" -eq 0 ]; then
		echo "=== isolation: skipped (no test/specs/*.spec yet)"
	else
		echo "=== isolation: ${#isolation_files[@]} spec(s)"
		rm -rf output_iso
		rc=0
		bounded "$make" --no-print-directory installcheck REGRESS= || rc=$?
		[ "$rc" -eq 0 ] || show_diffs output_iso/regression.diffs
		record isolation "$rc"
	fi
fi

# --- pgTAP ----------------------------------------------------------------------
if want pgtap; then
	if [ "${#pgtap_files[@]}" -eq 0 ]; then
		echo "=== pgtap: skipped (no test/pgtap/*.sql yet)"
	else
		echo "=== pgtap: ${#pgtap_files[@]} file(s)"
		rc=0
		psql -X -q -v ON_ERROR_STOP=1 -d postgres \
			-c 'SET client_min_messages = warning' \
			-c 'DROP DATABASE IF EXISTS flyt_tap' \
			-c 'CREATE DATABASE flyt_tap' || rc=$?
		if [ "$rc" -eq 0 ]; then
			psql -X -q -v ON_ERROR_STOP=1 -d flyt_tap \
				-c 'CREATE EXTENSION pgtap' \
				-c 'CREATE EXTENSION flyt_instance' || rc=$?
		fi
		if [ "$rc" -eq 0 ]; then
			bounded pg_prove -h "$PGHOST" -p "$PGPORT" -U postgres -d flyt_tap \
				"${pgtap_files[@]}" || rc=$?
		else
			echo "pgtap: could not set up database flyt_tap"
		fi
		record pgtap "$rc"
	fi
fi

# --- integration scripts ----------------------------------------------------------
if want integration; then
	if [ "${#integration_files[@]}" -eq 0 ]; then
		echo "=== integration: skipped (no test/integration/*.sh yet)"
	fi
	for t in "${integration_files[@]}"; do
		name=integration/$(basename "$t" .sh)
		if [ ! -x "$t" ]; then
			echo "=== $name: skipped (not executable)"
			continue
		fi
		echo "=== $name"
		rc=0
		bounded "$t" || rc=$?
		record "$name" "$rc"
	done
fi

# A crash or an assertion in the server shows in its log, not in the diffs.
if [ "$failed" -gt 0 ]; then
	cluster_log_tail 100 2>&1
fi
cluster_destroy

if [ "$failed" -gt 0 ]; then
	printf 'failed suites: %s\n' "${failed_names[*]}"
fi
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
