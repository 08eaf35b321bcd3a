# shellcheck shell=bash
#
# test/integration/lib_crash.sh — helpers of worker_crash.sh,
# worker_lifecycle.sh and bench/worker_rss.sh.  A library: source it, do not
# execute it (it is not executable, so test/run.sh does not run it).
#
#   . "$(dirname "$0")/lib_crash.sh"
#   lc_init 300                 # scratch dir, traps, overall time limit (s)
#   lc_broker_start             # flyt_broker on fifos; sets LC_BROKER_ADDR
#   lc_cluster_create_worker    # cluster with the worker preloaded
#   cluster_start; cluster_env
#   lc_create_extension || lc_finish
#   lc_gen_messages FILE PREFIX N      # N instance-received lines
#   lc_produce_bg FILE RATE            # background producer; LC_PRODUCER_PID
#   lc_wait 30 lc_sql_true "SELECT ..."
#   lc_finish                   # "N passed, M failed", exit status
#
# Every wait polls every 0.2 s and has a deadline; every psql is bounded by
# `timeout`; the EXIT/INT/TERM/HUP trap stops the broker, the producers, a
# standby started with lc_standby_*, and the cluster.
#
# kcat -P sends one static header for every message, and every message here
# needs flow headers of its own (distinct sourceApplicationInstanceId and
# correlationId), so messages are produced by a 60-line librdkafka program
# compiled into the scratch directory (librdkafka-dev is a build dependency).

# shellcheck disable=SC2317  # functions called from traps and through lc_wait

LC_REPO=${FLYT_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# shellcheck source=script/cluster.sh
. "${FLYT_CLUSTER_LIB:-$LC_REPO/script/cluster.sh}"

LC_ORG=fintlabs.no
LC_PREFIX=fintlabs-no.flyt.event
LC_T_RECEIVED=$LC_PREFIX.instance-received
LC_T_REGISTERED=$LC_PREFIX.instance-registered
LC_KAFKA_CONFIG='session.timeout.ms=6000;heartbeat.interval.ms=500'
LC_BROKER=${FLYT_BROKER:-$LC_REPO/broker/flyt_broker}

lc_passed=0
lc_failed=0
LC_WORK=
LC_TIME_LIMIT=300
LC_BROKER_PID=
LC_BROKER_IN=-1
LC_BROKER_OUT=-1
LC_BROKER_ADDR=
LC_BG_PIDS=()
# functions lc_cleanup calls first (for example kafka_down of script/kafka.sh)
LC_CLEANUP_FNS=()
LC_SB_DIR=
LC_SB_DATA=
LC_SB_SOCK=
LC_SB_PORT=

# --- results ---------------------------------------------------------------

lc_pass() {
	lc_passed=$((lc_passed + 1))
	echo "ok - $1"
}

lc_fail() {
	lc_failed=$((lc_failed + 1))
	echo "not ok - $1${2:+: $2}"
}

# lc_check NAME CMD... — ok when CMD succeeds.
lc_check() {
	local name=$1
	shift
	if "$@"; then lc_pass "$name"; else lc_fail "$name"; fi
}

# lc_eq NAME WANT GOT
lc_eq() {
	if [ "$2" = "$3" ]; then lc_pass "$1"; else lc_fail "$1" "expected '$2', got '$3'"; fi
}

# lc_finish — the summary line, the end of the server log on failure, exit.
lc_finish() {
	if [ "$lc_failed" -gt 0 ]; then
		cluster_log_tail 60 2>&1 || true
		if [ -n "$LC_WORK" ] && [ -s "$LC_WORK/broker.log" ]; then
			echo "----- broker stderr (last 20 lines) -----"
			tail -n 20 "$LC_WORK/broker.log"
		fi
	fi
	echo "$lc_passed passed, $lc_failed failed"
	if [ "$lc_failed" -gt 0 ]; then exit 1; fi
	exit 0
}

# lc_bail MESSAGE — one failure, then stop the test here.
lc_bail() {
	lc_fail "$1" "${2:-}"
	lc_finish
}

# --- set-up and cleanup ----------------------------------------------------

# lc_init TIME_LIMIT — scratch directory, traps; the whole script must end
# within TIME_LIMIT seconds (every wait is cut at that point).
lc_init() {
	LC_TIME_LIMIT=${1:-300}
	local t
	for t in kcat python3 "${CC:-cc}" timeout; do
		command -v "$t" >/dev/null 2>&1 || lc_bail "$t is installed"
	done
	# Fail fast while the installed extension has no worker yet.
	local share
	share=$("${PG_CONFIG:-pg_config}" --sharedir)/extension
	# (grep reads the files itself: "cat | grep -q" fails under pipefail
	# whenever grep exits before cat has written everything)
	if ! grep -qs 'flyt_status' "$share"/flyt_instance--*.sql; then
		lc_bail "flyt_status() missing: the installed flyt_instance has no worker functions (make install?)" "not in $share/flyt_instance--*.sql"
	fi
	LC_WORK=$(mktemp -d "${TMPDIR:-/tmp}/flyt_wtest.XXXXXX")
	chmod 755 "$LC_WORK"
	cluster_trap lc_cleanup
}

# Stops everything this script started (except the cluster: cluster_trap
# calls cluster_destroy after this).  Never fails.
lc_cleanup() {
	local pid fn
	for fn in "${LC_CLEANUP_FNS[@]}"; do
		"$fn" || true
	done
	for pid in "${LC_BG_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${LC_BG_PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	LC_BG_PIDS=()
	lc_standby_destroy
	lc_broker_stop
	if [ -n "$LC_WORK" ]; then rm -rf "$LC_WORK"; fi
	return 0
}

# Seconds left before the overall time limit.
lc_left() {
	echo $((LC_TIME_LIMIT - SECONDS))
}

# lc_budget WANT — print min(WANT, time left), at least 1 (safe in $(...)).
lc_budget() {
	local left
	left=$(lc_left)
	if [ "$left" -lt 1 ]; then left=1; fi
	if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

# lc_time_check — bail when the overall time limit has passed.
lc_time_check() {
	if [ "$(lc_left)" -le 0 ]; then
		lc_bail "overall time limit of $LC_TIME_LIMIT s"
	fi
}

# lc_wait SECONDS CMD... — run CMD every 0.2 s until it succeeds; false when
# SECONDS (or the overall time limit) pass first.
lc_wait() {
	local limit end
	lc_time_check
	limit=$(lc_budget "$1")
	shift
	end=$((SECONDS + limit))
	while :; do
		if "$@" >/dev/null 2>&1; then return 0; fi
		if [ "$SECONDS" -ge "$end" ]; then return 1; fi
		sleep 0.2
	done
}

# --- SQL -------------------------------------------------------------------

# lc_sql SQL — run one statement in database postgres; unaligned, tuples only.
lc_sql() {
	timeout "${LC_SQL_TIMEOUT:-30}" psql -X -qAt -v ON_ERROR_STOP=1 -d postgres -c "$1" 2>&1
}

# lc_sql_true SQL — true when SQL prints exactly "t".
lc_sql_true() {
	local out
	out=$(timeout "${LC_SQL_TIMEOUT:-30}" psql -X -qAt -v ON_ERROR_STOP=1 -d postgres -c "$1" 2>/dev/null) || return 1
	[ "$out" = t ]
}

# lc_worker_pid — pid of the worker from pg_stat_activity (empty if none).
lc_worker_pid() {
	timeout 10 psql -X -qAt -d postgres -c \
		"SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'flyt_instance%' ORDER BY backend_start DESC LIMIT 1" 2>/dev/null || true
}

# lc_worker_alive — true when the worker shows in pg_stat_activity.
lc_worker_alive() {
	[ -n "$(lc_worker_pid)" ]
}

# lc_worker_pid_is_not OLD — a worker is there and its pid is not OLD.
lc_worker_pid_is_not() {
	local p
	p=$(lc_worker_pid)
	[ -n "$p" ] && [ "$p" != "$1" ]
}

# lc_status_pid — flyt_status()->'worker'->>'pid' (empty on error).
lc_status_pid() {
	timeout 10 psql -X -qAt -d postgres -c "SELECT flyt_status()->'worker'->>'pid'" 2>/dev/null || true
}

# lc_worker_process_alive — the pid flyt_status() reports is a live
# flyt_instance process (works where the worker has no database connection).
lc_worker_process_alive() {
	local p
	p=$(lc_status_pid)
	[[ $p =~ ^[0-9]+$ ]] && grep -qa flyt_instance "/proc/$p/cmdline" 2>/dev/null
}

# lc_state — flyt_status()->'worker'->>'state' (empty on error).
lc_state() {
	timeout 10 psql -X -qAt -d postgres -c "SELECT flyt_status()->'worker'->>'state'" 2>/dev/null || true
}

# lc_state_in STATE... — the worker's state is one of these.
lc_state_in() {
	local s want
	s=$(lc_state)
	for want in "$@"; do
		[ "$s" = "$want" ] && return 0
	done
	return 1
}

# lc_count_between LO HI — LO < count(flyt.instance) < HI.
lc_count_between() {
	lc_sql_true "SELECT count(*) > $1 AND count(*) < $2 FROM flyt.instance"
}

# lc_count_at_least N
lc_count_at_least() {
	lc_sql_true "SELECT count(*) >= $1 FROM flyt.instance"
}

# lc_cluster_create_worker [-c LINE]... — a cluster with the worker preloaded,
# Kafka at $LC_BROKER_ADDR (start the broker first), cleanup in an hour.
lc_cluster_create_worker() {
	cluster_create -l '' \
		-c "shared_preload_libraries = 'flyt_instance'" \
		-c "flyt_instance.database = 'postgres'" \
		-c "flyt_instance.org_id = '$LC_ORG'" \
		-c "flyt_instance.kafka_bootstrap_servers = '$LC_BROKER_ADDR'" \
		-c "flyt_instance.kafka_config = '$LC_KAFKA_CONFIG'" \
		-c "flyt_instance.topic_replication_factor = 1" \
		-c "flyt_instance.cleanup_initial_delay = '1h'" \
		-c "max_prepared_transactions = 0" \
		"$@"
}

# lc_create_extension — CREATE EXTENSION flyt_instance; then make sure the
# worker's SQL surface is there.  Returns 1 when CREATE EXTENSION fails, 2
# when flyt_status() is missing (the caller should then finish).
lc_create_extension() {
	local out
	if ! out=$(lc_sql 'CREATE EXTENSION flyt_instance'); then
		lc_fail "CREATE EXTENSION flyt_instance" "$out"
		return 1
	fi
	if ! lc_sql_true "SELECT to_regprocedure('flyt_status()') IS NOT NULL"; then
		lc_fail "flyt_status() missing: the installed flyt_instance has no worker functions (make install?)"
		return 2
	fi
	lc_pass "CREATE EXTENSION flyt_instance; flyt_status() exists"
}

# --- broker ----------------------------------------------------------------

# lc_broker_start — start flyt_broker --topics-for fintlabs.no with its stdin
# and stdout on fifos; sets LC_BROKER_PID and LC_BROKER_ADDR.
lc_broker_start() {
	if [ ! -x "$LC_BROKER" ]; then
		make -s -C "$LC_REPO" broker >/dev/null 2>&1 || true
	fi
	[ -x "$LC_BROKER" ] || lc_bail "broker $LC_BROKER exists (make broker)"
	mkfifo "$LC_WORK/broker.in" "$LC_WORK/broker.out"
	"$LC_BROKER" --topics-for "$LC_ORG" <"$LC_WORK/broker.in" \
		>"$LC_WORK/broker.out" 2>>"$LC_WORK/broker.log" &
	LC_BROKER_PID=$!
	# The same order as the broker opens them, so neither side blocks.
	exec {LC_BROKER_IN}>"$LC_WORK/broker.in" {LC_BROKER_OUT}<"$LC_WORK/broker.out"
	local line=''
	IFS= read -r -t 15 -u "$LC_BROKER_OUT" line || true
	if [[ $line != bootstrap=* ]]; then
		lc_bail "broker prints its bootstrap address" "got '$line'"
	fi
	LC_BROKER_ADDR=${line#bootstrap=}
}

# lc_broker_cmd CMD — send a command (down, up) and read its answer.
lc_broker_cmd() {
	local reply=''
	(printf '%s\n' "$1" >&"$LC_BROKER_IN") 2>/dev/null || return 1
	IFS= read -r -t 10 -u "$LC_BROKER_OUT" reply || return 1
	[[ $reply == ok* ]]
}

# lc_broker_stop — quit the broker (kill it if it does not go within 5 s).
lc_broker_stop() {
	[ -n "$LC_BROKER_PID" ] || return 0
	if [ "$LC_BROKER_IN" -ge 0 ]; then
		(printf 'quit\n' >&"$LC_BROKER_IN") 2>/dev/null || true
		exec {LC_BROKER_IN}>&- || true
		LC_BROKER_IN=-1
	fi
	local i
	for ((i = 0; i < 25; i++)); do
		kill -0 "$LC_BROKER_PID" 2>/dev/null || break
		sleep 0.2
	done
	kill -KILL "$LC_BROKER_PID" 2>/dev/null || true
	wait "$LC_BROKER_PID" 2>/dev/null || true
	if [ "$LC_BROKER_OUT" -ge 0 ]; then
		exec {LC_BROKER_OUT}<&- || true
		LC_BROKER_OUT=-1
	fi
	LC_BROKER_PID=
}

# --- producing ---------------------------------------------------------------

# lc_build_producer — compile $LC_WORK/flyt_produce: reads lines
# "KEY<TAB>FLOW-HEADERS-JSON<TAB>VALUE" on stdin and produces each to -t TOPIC
# with header flyt.instance-flow-headers (an empty KEY: no key), at most -r
# messages per second (0: as fast as possible).  Exit 0 when every message
# was acknowledged.
lc_build_producer() {
	"${CC:-cc}" -O2 -Wall -o "$LC_WORK/flyt_produce" "$LC_REPO/test/integration/tools/flyt_produce.c" \
		-lrdkafka 2>"$LC_WORK/flyt_produce.err" ||
		lc_bail "compile the test producer" "$(cat "$LC_WORK/flyt_produce.err")"
}

# lc_gen_messages FILE PREFIX N — N instance-received lines for flyt_produce:
# key PREFIX-i, flow headers with sourceApplicationInstanceId PREFIX-i and a
# random correlationId, the value a small instance.
lc_gen_messages() {
	python3 "$LC_REPO/test/integration/tools/gen_received.py" "$1" "$2" "$3"
}

# lc_produce FILE [RATE] — produce FILE to instance-received, in the foreground.
lc_produce() {
	timeout "$(lc_budget 300)" "$LC_WORK/flyt_produce" -b "$LC_BROKER_ADDR" \
		-t "$LC_T_RECEIVED" -r "${2:-0}" <"$1" 2>>"$LC_WORK/producer.log"
}

# lc_produce_bg FILE RATE — the same in the background; LC_PRODUCER_PID.
lc_produce_bg() {
	timeout "$(lc_budget 300)" "$LC_WORK/flyt_produce" -b "$LC_BROKER_ADDR" \
		-t "$LC_T_RECEIVED" -r "${2:-0}" <"$1" 2>>"$LC_WORK/producer.log" &
	LC_PRODUCER_PID=$!
	LC_BG_PIDS+=("$LC_PRODUCER_PID")
}

# lc_wait_pid PID SECONDS — wait for a background job; its exit status, or
# 124 when it is still running after SECONDS (it is then killed).
lc_wait_pid() {
	local pid=$1 end rc=0
	end=$((SECONDS + $(lc_budget "$2")))
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$SECONDS" -ge "$end" ]; then
			kill -TERM "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			return 124
		fi
		sleep 0.2
	done
	wait "$pid" || rc=$?
	return "$rc"
}

# lc_registered_pairs FILE — "INSTANCE-ID EVENT-ID" for every message on
# instance-registered (instanceId from the flow headers, flyt.event-id),
# distinct pairs, sorted.
lc_registered_pairs() {
	timeout "$(lc_budget 60)" kcat -C -q -b "$LC_BROKER_ADDR" -t "$LC_T_REGISTERED" \
		-o beginning -e -f '%h\n' 2>>"$LC_WORK/kcat.log" |
		python3 -c '
import re, sys
for line in sys.stdin:
    i = re.search(r"\"instanceId\" *: *([0-9]+)", line)
    e = re.search(r"flyt\.event-id=([0-9a-f-]+)", line)
    print(i.group(1) if i else "none", e.group(1) if e else "none")
' | sort -u >"$1"
}

# --- a standby of the cluster (second cluster, managed here) ------------------

# Run a command as the owner of the standby's directory.
_lc_sb_owner() {
	cluster_run_as_owner "$LC_SB_DIR" "$@"
}

# lc_standby_create — pg_basebackup -R of the running cluster into a new
# directory, with a port and socket directory of its own.
lc_standby_create() {
	local bindir
	bindir=$("${PG_CONFIG:-pg_config}" --bindir)
	LC_SB_DIR=$(mktemp -d /tmp/flyt_sb.XXXXXX)
	if [ "$(id -u)" -eq 0 ]; then chown postgres: "$LC_SB_DIR"; fi
	LC_SB_DATA=$LC_SB_DIR/data
	LC_SB_SOCK=$LC_SB_DIR/run
	_lc_sb_owner mkdir -m 0700 "$LC_SB_SOCK" || return 1
	LC_SB_PORT=$(_cluster_pick_port) || return 1
	if ! _lc_sb_owner timeout 120 "$bindir/pg_basebackup" -D "$LC_SB_DATA" -R -X stream \
		-c fast -h "$CLUSTER_SOCKDIR" -p "$CLUSTER_PORT" -U postgres \
		>"$LC_SB_DIR/basebackup.log" 2>&1; then
		cat "$LC_SB_DIR/basebackup.log" >&2
		return 1
	fi
	printf "port = %s\nunix_socket_directories = '%s'\n" "$LC_SB_PORT" "$LC_SB_SOCK" |
		_lc_sb_owner tee -a "$LC_SB_DATA/postgresql.auto.conf" >/dev/null
}

# lc_standby_start — start it and wait until it accepts connections.
lc_standby_start() {
	local bindir
	bindir=$("${PG_CONFIG:-pg_config}" --bindir)
	_lc_sb_owner "$bindir/pg_ctl" -D "$LC_SB_DATA" -l "$LC_SB_DIR/postgres.log" -w -t 60 start >/dev/null
}

# lc_standby_promote
lc_standby_promote() {
	local bindir
	bindir=$("${PG_CONFIG:-pg_config}" --bindir)
	_lc_sb_owner "$bindir/pg_ctl" -D "$LC_SB_DATA" -w -t 60 promote >/dev/null
}

# lc_on_standby CMD... — run CMD with PGHOST/PGPORT of the standby.
lc_on_standby() {
	PGHOST=$LC_SB_SOCK PGPORT=$LC_SB_PORT "$@"
}

# lc_standby_destroy — stop (immediately if need be) and remove the standby.
lc_standby_destroy() {
	[ -n "$LC_SB_DIR" ] || return 0
	local bindir
	bindir=$("${PG_CONFIG:-pg_config}" --bindir)
	if [ -f "$LC_SB_DATA/postmaster.pid" ]; then
		_lc_sb_owner "$bindir/pg_ctl" -D "$LC_SB_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			_lc_sb_owner "$bindir/pg_ctl" -D "$LC_SB_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	fi
	rm -rf "$LC_SB_DIR" || true
	LC_SB_DIR=
	return 0
}

# lc_standby_log_tail [LINES]
lc_standby_log_tail() {
	[ -n "$LC_SB_DIR" ] && [ -f "$LC_SB_DIR/postgres.log" ] || return 0
	echo "----- last ${1:-40} lines of the standby's log -----"
	tail -n "${1:-40}" "$LC_SB_DIR/postgres.log"
}
