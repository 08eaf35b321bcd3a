# shellcheck shell=bash
#
# test/integration/lib.sh — helpers for the background-worker integration
# tests (worker_*.sh).  A library: source it, do not execute it.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   it_setup 300                  # scratch dir, traps, overall limit (s)
#   broker_start                  # broker/flyt_broker --topics-for fintlabs.no
#   (or kafka_start; kafka_create_topics "$ORG"   # a real Apache Kafka)
#   worker_cluster_start [-c 'extra config line']...
#   require_worker                # fails fast when flyt_status() is missing
#   ...
#   finish                        # "N passed, M failed", exit status
#
# Each script gets a broker and a cluster of its own (never the shared
# cluster of test/run.sh: it has no broker configured).  Whatever happens,
# the EXIT/INT/TERM/HUP trap stops the broker (EOF on its stdin, then KILL
# of that one pid; a real Kafka: TERM, then KILL) and destroys the cluster
# (script/cluster.sh).
#
# Two brokers to choose from:
#   broker_start   the embedded mock (librdkafka's mock cluster): starts at
#                  once, takes brokers down and up instantly (broker_cmd);
#                  no admin API, simplistic groups
#   kafka_start    a real Apache Kafka node (script/kafka.sh, KRaft, from
#                  Maven Central): admin API, real group coordinator, kill -9
#                  and restart (kafka_kill9, kafka_restart); about 5 s to
#                  start.  Topics are not created automatically: the worker
#                  provisions what it produces, kafka_create_topics makes
#                  the set broker_start has.  The kafka_* functions of
#                  script/kafka.sh (kafka_topics, kafka_configs,
#                  kafka_groups, kafka_topic_partitions, kafka_topic_config)
#                  are the independent admin client.
#
# Waiting is always polling with a deadline (wait_until); every psql and
# kcat call is bounded by `timeout`.
#
# Environment (set by test/run.sh; defaults for running a script by hand):
#   FLYT_REPO, FLYT_CLUSTER_LIB, FLYT_FIXTURES
#   FLYT_BROKER          broker program (default $FLYT_REPO/broker/flyt_broker)
#   FLYT_IT_WAIT         default deadline of one wait in seconds (default 30)
#   KAFKA_VERSION        Kafka release kafka_start runs (script/kafka.sh)
#   FLYT_KEEP_CLUSTER=1  keep the cluster directory (script/cluster.sh)

# Functions called through check/wait_until look unreachable to shellcheck,
# the constants are used by the scripts, jq programs are single-quoted.
# shellcheck disable=SC2317,SC2034,SC2016

FLYT_REPO=${FLYT_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FLYT_CLUSTER_LIB=${FLYT_CLUSTER_LIB:-$FLYT_REPO/script/cluster.sh}
FLYT_FIXTURES=${FLYT_FIXTURES:-$FLYT_REPO/test/fixtures}
# shellcheck source=script/cluster.sh
. "$FLYT_CLUSTER_LIB"
# shellcheck source=script/kafka.sh
. "$FLYT_REPO/script/kafka.sh"

ORG=fintlabs.no
PREFIX=fintlabs-no.flyt.event
T_RECEIVED=$PREFIX.instance-received
T_DISPATCHED=$PREFIX.instance-dispatched
T_REGISTERED=$PREFIX.instance-registered
T_RETRY=$PREFIX.instance-requested-for-retry
T_DELETED=$PREFIX.instance-deleted
T_REG_ERROR=$PREFIX.error.instance-registration-error
T_RETRY_ERROR=$PREFIX.error.instance-retry-request-error
T_INSTANCE_ERROR=$PREFIX.error.instance-error
H_FLOW=flyt.instance-flow-headers
H_EVENT_ID=flyt.event-id
ERROR_VALUE='{"errors":[{"errorCode":"FINT_FLYT_INSTANCE_SERVICE_GENERAL_SYSTEM_ERROR","args":null}]}'
KAFKA_CONFIG='session.timeout.ms=6000;heartbeat.interval.ms=500'

FIX_HEADERS=$(tr -d '\n' <"$FLYT_FIXTURES/instance-received.headers.json")
FIX_VALUE=$(tr -d '\n' <"$FLYT_FIXTURES/instance-received.value.json")

WAIT=${FLYT_IT_WAIT:-30}
TIME_LIMIT=300
passed=0
failed=0
WORK=
IT_PIDS=()
BROKER_LOG=
broker_pid=
broker_in=-1
broker_out=-1
BOOTSTRAP=
reply=

# jq helpers for kcat -J envelopes ({"key", "payload", "headers": [name,
# value, name, value, ...], "offset", ...}).
JQ_DEFS='
def hdr($n): .headers as $h | [range(0; ($h | length); 2) | select($h[.] == $n) | $h[. + 1]] | .[0];
def flow: hdr("flyt.instance-flow-headers") as $x | if $x == null then null else (try ($x | fromjson) catch null) end;
def eventid: hdr("flyt.event-id");
def isnum: type == "string" and test("^[0-9]+$");
def isuuid: type == "string" and test("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
def java_date: type == "string" and test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}\\+00:00$");
'

# --- results -----------------------------------------------------------------

pass() {
	passed=$((passed + 1))
	echo "ok - $1"
}

fail() {
	failed=$((failed + 1))
	echo "not ok - $1"
	local d
	for d in "${@:2}"; do
		[ -n "$d" ] && printf '#   %s\n' "$d"
	done
	return 0
}

note() {
	printf '# %s\n' "$*"
}

# check NAME COMMAND... — one result from a command's exit status.
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}

# check_eq NAME EXPECTED GOT
check_eq() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1" "expected: $2" "got:      $3"
	fi
}

# Prints diagnostics when something failed, the summary line, and exits.
finish() {
	trap - ERR
	if [ "$failed" -gt 0 ]; then
		cluster_log_tail 80 2>&1 || true
		if [ -n "$BROKER_LOG" ] && [ -s "$BROKER_LOG" ]; then
			echo "----- last 20 lines of the broker's stderr -----"
			tail -n 20 "$BROKER_LOG" || true
			echo "----- end of broker stderr -----"
		fi
		if [ -n "$KAFKA_LOG" ] && [ -s "$KAFKA_LOG" ]; then
			echo "----- warnings and errors at the end of $KAFKA_LOG -----"
			tail -n 2000 "$KAFKA_LOG" | grep -E '^\[[^]]*\] (WARN|ERROR|FATAL)' |
				tail -n 20 || true
			echo "----- end of the Kafka log -----"
		fi
	fi
	echo "$passed passed, $failed failed"
	if [ "$failed" -gt 0 ]; then exit 1; fi
	exit 0
}

# The ERR trap: an unexpected failing command in the main script.
on_err() {
	[ "${BASHPID:-$$}" = "$$" ] || return 0
	bail "unexpected failure of a command at line $1 of $0"
}

# bail MESSAGE — one failure, then finish at once.
bail() {
	fail "$@"
	finish
}

# --- time ----------------------------------------------------------------------

# Seconds left of the script's overall limit (at least 1).
time_left() {
	local l=$((TIME_LIMIT - SECONDS))
	if [ "$l" -lt 1 ]; then l=1; fi
	echo "$l"
}

# budget SECONDS — the smaller of SECONDS and the time left (at least 1).
budget() {
	local want=$1 left=$((TIME_LIMIT - SECONDS))
	if [ "$left" -lt 1 ]; then left=1; fi
	if [ "$want" -gt "$left" ]; then want=$left; fi
	echo "$want"
}

# out_of_time — true (and one failure) when the overall limit has passed.
out_of_time() {
	if [ "$SECONDS" -ge "$TIME_LIMIT" ]; then
		fail "overall time limit of ${TIME_LIMIT}s reached"
		return 0
	fi
	return 1
}

# wait_until SECONDS COMMAND... — poll COMMAND every 0.2 s until it succeeds;
# false when SECONDS (or the overall limit) pass first.
wait_until() {
	local limit
	limit=$(budget "$1")
	shift
	out_of_time && return 1
	local end=$((SECONDS + limit))
	while :; do
		if "$@"; then return 0; fi
		if [ "$SECONDS" -ge "$end" ]; then
			# One last try: the condition may have become true meanwhile.
			"$@" && return 0
			return 1
		fi
		sleep 0.2
	done
}

# holds_for SECONDS COMMAND... — COMMAND stays true for SECONDS (polled).
holds_for() {
	local end=$((SECONDS + $1))
	shift
	while [ "$SECONDS" -lt "$end" ]; do
		"$@" || return 1
		sleep 0.2
	done
	"$@"
}

# --- setup and teardown --------------------------------------------------------

# it_setup TIME_LIMIT — scratch directory and traps.
it_setup() {
	TIME_LIMIT=$1
	local base=${TMPDIR:-/tmp}
	WORK=$(mktemp -d "$base/flyt_it.XXXXXX")
	BROKER_LOG=$WORK/broker.log
	: >"$BROKER_LOG"
	cluster_trap it_teardown
	# A command failing outside any check ends the script with a result.
	trap 'on_err $LINENO' ERR
	for tool in kcat jq psql timeout; do
		command -v "$tool" >/dev/null 2>&1 || bail "$tool is not installed"
	done
}

# Stops the broker we started (only that pid) and removes the scratch dir.
# Runs from the traps: never fails.
it_teardown() {
	# helper processes a script started (IT_PIDS), such as a test client
	local p
	for p in "${IT_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	broker_stop || true
	# A real Kafka after the cluster, the reverse of the start: the worker
	# then leaves its group while the broker still answers, and a fast stop
	# does not wait on a broker that went away a moment before.
	if [ -n "$KAFKA_PID" ]; then
		cluster_destroy || true
	fi
	kafka_down || true
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "${FLYT_KEEP_CLUSTER:-0}" = 1 ]; then
			echo "keeping $WORK" >&2
		else
			rm -rf "$WORK" || true
		fi
	fi
	return 0
}

# --- the broker ------------------------------------------------------------------

# broker_start — start broker/flyt_broker on fifos; sets BOOTSTRAP.
broker_start() {
	local bin=${FLYT_BROKER:-$FLYT_REPO/broker/flyt_broker}
	[ -x "$bin" ] || bail "broker program $bin is missing (run: make broker)"
	mkfifo "$WORK/broker.in" "$WORK/broker.out"
	"$bin" --topics-for "$ORG" <"$WORK/broker.in" >"$WORK/broker.out" 2>>"$BROKER_LOG" &
	broker_pid=$!
	# The order the broker opens them in, so neither side blocks for good.
	exec {broker_in}>"$WORK/broker.in" {broker_out}<"$WORK/broker.out"
	reply=
	IFS= read -r -t 15 -u "$broker_out" reply || true
	case $reply in
	bootstrap=*) BOOTSTRAP=${reply#bootstrap=} ;;
	*) bail "broker prints its bootstrap address" "got: '$reply'" ;;
	esac
	note "broker $broker_pid at $BOOTSTRAP"
}

# broker_cmd COMMAND — send one command, the answer is in $reply.
broker_cmd() {
	reply=
	if [ "$broker_in" -lt 0 ] || ! (printf '%s\n' "$1" >&"$broker_in") 2>/dev/null; then
		reply="<broker not reading>"
		return 1
	fi
	IFS= read -r -t 15 -u "$broker_out" reply || {
		reply="<no answer>"
		return 1
	}
}

# without_broker_fds COMMAND... — run COMMAND (a function is fine) with the
# broker's fifos closed, so that long-lived children (the postmaster) do not
# hold them open: the broker sees EOF only when every writer is gone.
without_broker_fds() {
	local redir=''
	if [ "$broker_in" -ge 0 ]; then redir+=" $broker_in>&-"; fi
	if [ "$broker_out" -ge 0 ]; then redir+=" $broker_out<&-"; fi
	eval "\"\$@\" $redir"
}

# spawn COMMAND... — start a program in the background without the broker's
# fifos, as the program itself (exec), so that $! is its pid and killing it
# (IT_PIDS, it_teardown) stops it.  (A function or `without_broker_fds`
# started with & runs in a subshell whose child the kill would miss.)
spawn() {
	(
		if [ "$broker_in" -ge 0 ]; then exec {broker_in}>&-; fi
		if [ "$broker_out" -ge 0 ]; then exec {broker_out}<&-; fi
		exec "$@"
	) &
}

# gdb_hold PID BREAKPOINT — gdb attaches to process PID (a backend), stops
# it at BREAKPOINT and holds it there until $WORK/release exists, then
# detaches.  Sets GDB_PID; the log is $WORK/gdb.log ("Breakpoint 1, ..."
# once stopped).  False when gdb did not attach in 30 s (no ptrace here?).
gdb_hold() {
	rm -f "$WORK/release"
	spawn gdb -p "$1" -batch -ex 'set pagination off' \
		-ex 'handle SIGUSR1 SIGUSR2 SIGTERM SIGINT SIGQUIT SIGPIPE SIGALRM nostop noprint pass' \
		-ex 'info proc' -ex "break $2" \
		-ex 'echo gdb: waiting\n' -ex 'continue' \
		-ex "shell timeout 60 sh -c 'until [ -e $WORK/release ]; do sleep 0.05; done'" -ex 'detach' \
		>"$WORK/gdb.log" 2>&1
	GDB_PID=$!
	IT_PIDS+=("$GDB_PID")
	wait_until 30 grep -q '^gdb: waiting' "$WORK/gdb.log" && grep -q "^process $1\$" "$WORK/gdb.log"
}

# broker_stop — "quit", then EOF on stdin; KILL after 10 s.  Idempotent.
broker_stop() {
	[ -n "$broker_pid" ] || return 0
	local pid=$broker_pid i
	broker_cmd quit >/dev/null 2>&1 || true
	broker_pid=
	if [ "$broker_in" -ge 0 ]; then
		exec {broker_in}>&- || true
		broker_in=-1
	fi
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "broker $pid did not exit, killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	if [ "$broker_out" -ge 0 ]; then
		exec {broker_out}<&- || true
		broker_out=-1
	fi
	return 0
}

# --- the real broker ---------------------------------------------------------------

# kafka_start [name=value]... — start a real Apache Kafka node in $WORK/kafka
# (script/kafka.sh kafka_up; extra server.properties lines last, e.g.
# auto.create.topics.enable=true); sets BOOTSTRAP like broker_start, and
# KAFKA_BOOTSTRAP, KAFKA_START_SECONDS, KAFKA_LOG, KAFKA_RUNNING_VERSION.
# it_teardown stops it.  No topics yet: see kafka_create_topics.
kafka_start() {
	without_broker_fds kafka_up "$WORK/kafka" "$@" >>"$WORK/kafka.err" 2>&1 ||
		bail "a real Kafka starts (script/kafka.sh)" "$(tail -n 40 "$WORK/kafka.err")"
	BOOTSTRAP=$KAFKA_BOOTSTRAP
	note "Kafka $KAFKA_RUNNING_VERSION pid $KAFKA_PID at $BOOTSTRAP, up in ${KAFKA_START_SECONDS}s"
}

# kafka_restart_checked — kafka_restart (same ports and data), or bail.
kafka_restart_checked() {
	without_broker_fds kafka_restart >>"$WORK/kafka.err" 2>&1 ||
		bail "Kafka starts again" "$(tail -n 40 "$WORK/kafka.err")"
	note "Kafka up again in ${KAFKA_START_SECONDS}s"
}

# --- the cluster -------------------------------------------------------------------

# worker_cluster_start [-c 'line']... — a cluster with the worker configured
# for $BOOTSTRAP, started, with the extension created in database postgres.
worker_cluster_start() {
	local -a conf=(
		-c "shared_preload_libraries = 'flyt_instance'"
		-c "flyt_instance.database = 'postgres'"
		-c "flyt_instance.org_id = '$ORG'"
		-c "flyt_instance.kafka_bootstrap_servers = '$BOOTSTRAP'"
		-c "flyt_instance.kafka_config = '$KAFKA_CONFIG'"
		-c "flyt_instance.topic_replication_factor = 1"
		-c "flyt_instance.cleanup_initial_delay = '1h'"
	)
	cluster_create -l '' "${conf[@]}" "$@" || bail "cluster_create"
	without_broker_fds cluster_start || bail "cluster_start"
	cluster_env
	export PGCONNECT_TIMEOUT=5
	note "cluster in $CLUSTER_DIR, port $CLUSTER_PORT"
	sql 'CREATE EXTENSION flyt_instance' >/dev/null || bail "CREATE EXTENSION flyt_instance"
}

# True while the postmaster of our cluster runs (for leak checks by hand).
cluster_pids() {
	pgrep -f -- "-D $CLUSTER_DATA" || true
}

# sql [-v name=value]... QUERY — run QUERY in database postgres; unaligned,
# tuples only.  psql variables (:'name') are interpolated, as QUERY is read
# from stdin.
sql() {
	local -a vars=()
	while [ "$#" -gt 1 ] && [ "$1" = -v ]; do
		vars+=(-v "$2")
		shift 2
	done
	printf '%s\n' "$1" | timeout 30 psql -X -At -q -v ON_ERROR_STOP=1 "${vars[@]}" -d postgres -f -
}

# sql_quiet: the same without error output (for polling).
sql_quiet() {
	sql "$@" 2>/dev/null
}

# sql_is EXPECTED [-v ...] QUERY — true when the query prints EXPECTED.
sql_is() {
	local want=$1 got
	shift
	got=$(sql_quiet "$@") || return 1
	[ "$got" = "$want" ]
}

# require_worker — stop at once, clearly, when there is no worker yet.
require_worker() {
	local has
	has=$(sql "SELECT to_regprocedure('flyt_status()') IS NOT NULL") ||
		bail "cannot query the cluster"
	if [ "$has" != t ]; then
		bail "flyt_status() missing: the installed flyt_instance has no worker functions (make install?)"
	fi
	pass "flyt_status() exists"
}

status_field() {
	sql_quiet "SELECT flyt_status()$1"
}

# wait_status_up [SECONDS] — flyt_status()->>'status' becomes UP.
wait_status_up() {
	wait_until "${1:-$WAIT}" sql_is UP "SELECT flyt_status()->>'status'"
}

# expect_status_up [SECONDS] — one result: flyt_status() says UP within
# SECONDS (default 45); bails otherwise.
expect_status_up() {
	if wait_status_up "${1:-45}"; then
		pass "status UP"
	else
		bail "status UP" "flyt_status(): $(show_status)"
	fi
}

# register_fixture — registers the fixture instance through SQL, prints its id.
register_fixture() {
	sql -v h="$FIX_HEADERS" -v v="$FIX_VALUE" "SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb)"
}

# Prints flyt_status() (for failure diagnostics).
show_status() {
	local s
	s=$(sql_quiet "SELECT flyt_status()") || s='<flyt_status() failed>'
	printf '%s' "$s"
}

# metric_sum NAME — sum of the samples of metric NAME (any labels) in
# flyt_metrics(); empty when there is none.
metric_sum() {
	sql_quiet "SELECT flyt_metrics()" |
		awk -v n="$1" '
			index($0, n) == 1 {
				rest = substr($0, length(n) + 1)
				if (rest !~ /^[ {]/) next
				sub(/^\{[^}]*\}/, "", rest)
				split(rest, f, " ")
				s += f[1]; seen = 1
			}
			END { if (seen) printf "%g\n", s }'
}

# unsendable — creates test_register_unsendable(headers, instance): what
# flyt_register_instance does, without its check that instance-registered
# fits into the producer's message.max.bytes, so that a row the producer
# refuses every time can be queued.
unsendable() {
	sql "CREATE FUNCTION test_register_unsendable(h jsonb, v jsonb) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
	i bigint;
BEGIN
	INSERT INTO flyt.instance (payload, source_application_id) VALUES (v, (h->>'sourceApplicationId')::bigint)
	RETURNING id INTO i;
	UPDATE flyt.instance SET flow_headers = h || jsonb_build_object('instanceId', i) WHERE id = i;
	INSERT INTO flyt.instance_event (instance_id, version, event_type) VALUES (i, 1, 'REGISTERED');
	INSERT INTO flyt.outbox (event_name, topic, key, headers, value)
	VALUES ('instance-registered', '$T_REGISTERED', i::text,
		jsonb_build_object('flyt.instance-flow-headers', flyt.wire_flow_headers(h || jsonb_build_object('instanceId', i)),
			'flyt.event-id', gen_random_uuid()::text),
		flyt_instance(i)::text);
	RETURN i;
END \$\$" >/dev/null
}

# --- Kafka through kcat ----------------------------------------------------------

# produce TOPIC KEY VALUE [-H name=value]... — one message; false on failure.
produce() {
	local topic=$1 key=$2 value=$3
	shift 3
	printf '%s\n' "$value" |
		timeout "$(budget 20)" kcat -P -b "$BOOTSTRAP" -t "$topic" -k "$key" \
			-X message.timeout.ms=10000 "$@" 2>>"$WORK/kcat.err"
}

# consume_all TOPIC — every message of the topic so far, one kcat -J
# envelope per line.
consume_all() {
	timeout "$(budget 20)" kcat -C -b "$BOOTSTRAP" -t "$1" -o beginning -e -J \
		-X topic.metadata.refresh.interval.ms=1000 2>>"$WORK/kcat.err"
}

# topic_count TOPIC — how many messages the topic has.
topic_count() {
	local out
	out=$(consume_all "$1") || return 1
	if [ -z "$out" ]; then echo 0; else printf '%s\n' "$out" | wc -l; fi
}

# topic_has_at_least TOPIC N
topic_has_at_least() {
	local n
	n=$(topic_count "$1") || return 1
	[ "$n" -ge "$2" ]
}

# wait_messages TOPIC N [SECONDS] — at least N messages on TOPIC; then the
# whole topic, as a JSON array of envelopes, is in file $WORK/<TOPIC>.json.
wait_messages() {
	local topic=$1 n=$2 secs=${3:-$WAIT} rc=0
	wait_until "$secs" topic_has_at_least "$topic" "$n" || rc=1
	snapshot "$topic"
	return "$rc"
}

# snapshot TOPIC — the whole topic as a JSON array in $WORK/<TOPIC>.json.
snapshot() {
	consume_all "$1" | jq -s . >"$WORK/$1.json" || echo '[]' >"$WORK/$1.json"
}

# jcheck NAME FILE JQ_FILTER [jq args]... — pass when the filter (with
# JQ_DEFS) yields true for the JSON in FILE; shows the JSON otherwise.
jcheck() {
	local name=$1 file=$2 filter=$3
	shift 3
	if jq -e "$@" "$JQ_DEFS $filter" "$file" >/dev/null 2>"$WORK/jq.err"; then
		pass "$name"
	else
		fail "$name" "jq: $(head -c 300 "$WORK/jq.err")" "data: $(jq -c . "$file" 2>/dev/null | head -c 1500)"
	fi
}

# jval FILE JQ_FILTER [jq args]... — print a value (raw) from FILE.
jval() {
	local file=$1 filter=$2
	shift 2
	jq -r "$@" "$JQ_DEFS $filter" "$file"
}
