#!/usr/bin/env bash
#
# test_broker.sh
#	  Tests flyt_broker with kcat: topic pre-creation, produce and consume
#	  with keys and headers, broker down/up, committed group offsets, the
#	  command protocol, fixed ports and shutdown.
#
# Usage: broker/test_broker.sh
#
# Runs broker/flyt_broker (building it with cc when it is missing or older
# than its source), or $FLYT_BROKER when set.  Needs kcat.  The brokers'
# stdin and stdout are fifos; every wait is on a line the broker prints, on
# its exit, or on kcat's own timeouts, each bounded by $STEP_TIMEOUT and all
# together by $TIME_LIMIT seconds.  The last line is "N passed, M failed";
# the exit status is non-zero on failure.

# Functions called through check and the traps look unreachable to it.
# shellcheck disable=SC2317

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STEP_TIMEOUT=15
TIME_LIMIT=55
ORG=fintlabs.no
PREFIX=fintlabs-no.flyt.event
FLYT_TOPICS=(
	"$PREFIX.instance-received"
	"$PREFIX.instance-dispatched"
	"$PREFIX.instance-registered"
	"$PREFIX.instance-requested-for-retry"
	"$PREFIX.instance-deleted"
	"$PREFIX.error.instance-registration-error"
	"$PREFIX.error.instance-retry-request-error"
	"$PREFIX.error.instance-error"
	"fintlabs-no.flyt.request.instance-flow-headers-for-registered-instance.by.instance-id"
	"fintlabs-no.flyt.reply.fint-flyt-instance-service.instance-flow-headers-for-registered-instance"
)

passed=0
failed=0
broker_pids=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flyt_broker_test.XXXXXX")
LOG=$WORK/broker.log

# Always kill every broker started here and remove the scratch directory.
cleanup() {
	local pid
	for pid in "${broker_pids[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'fail interrupted; finish' INT TERM

pass() {
	passed=$((passed + 1))
	echo "ok - $1"
}

fail() {
	failed=$((failed + 1))
	echo "not ok - $1${2:+: $2}"
}

# Records whether a condition (the rest of the arguments, a command) holds.
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}

# Prints the summary line and exits with the verdict.
finish() {
	if [[ $failed -gt 0 && -s $LOG ]]; then
		echo "--- broker stderr (last 40 lines) ---"
		tail -n 40 "$LOG"
	fi
	echo "$passed passed, $failed failed"
	if ((failed > 0)); then exit 1; fi
	exit 0
}

# Sets $budget to the seconds the next wait may take; gives up when the
# overall time limit is reached.
set_budget() {
	budget=$((TIME_LIMIT - SECONDS))
	if ((budget <= 0)); then
		fail "overall time limit of $TIME_LIMIT s reached"
		finish
	fi
	if ((budget > STEP_TIMEOUT)); then budget=$STEP_TIMEOUT; fi
}

# Runs kcat, bounded; its diagnostics go to the log.
kc() {
	set_budget
	timeout "$budget" kcat "$@" 2>>"$LOG"
}

# Starts a broker with the given options on fifos.  Sets broker_pid,
# broker_in (fd to write commands to) and broker_out (fd to read from).
start_broker() {
	local n=${#broker_pids[@]}
	local in=$WORK/in.$n out=$WORK/out.$n

	mkfifo "$in" "$out"
	"$BROKER" "$@" <"$in" >"$out" 2>>"$LOG" &
	broker_pid=$!
	broker_pids+=("$broker_pid")
	# Same order as the broker opens them, so neither side blocks for good.
	exec {broker_in}>"$in" {broker_out}<"$out"
}

# Reads the next line the broker prints into $reply; false on EOF/timeout.
read_reply() {
	reply=""
	set_budget
	IFS= read -r -t "$budget" -u "$broker_out" reply
}

# Sends one command and reads the answer into $reply.  Writes in a subshell,
# which a broker that is gone kills with SIGPIPE instead of this script.
send() {
	if ! (printf '%s\n' "$1" >&"$broker_in") 2>/dev/null; then
		reply="<broker not reading>"
		return
	fi
	read_reply || reply="<no answer>"
}

# Sends a command and checks the answer.
expect_reply() {
	local name=$1 command=$2 want=$3
	send "$command"
	# $want is a glob pattern.
	# shellcheck disable=SC2053
	if [[ $reply == $want ]]; then pass "$name"; else fail "$name" "got \"$reply\""; fi
}

# Reads the bootstrap line of a started broker into $addr.
read_bootstrap() {
	addr=""
	if read_reply && [[ $reply == bootstrap=* ]]; then
		addr=${reply#bootstrap=}
		pass "broker prints bootstrap=$addr"
	else
		fail "broker prints its bootstrap address" "got \"$reply\""
		finish
	fi
}

# Waits until the broker closes stdout (it does so only by exiting), then
# sets $status to its exit status and closes the fifos.
wait_broker_exit() {
	local rc=0
	set_budget
	while :; do
		IFS= read -r -t "$budget" -u "$broker_out" _ || { rc=$?; break; }
	done
	if ((rc > 128)); then
		echo "broker $broker_pid did not exit in time, killing it"
		kill -KILL "$broker_pid" 2>/dev/null || true
	fi
	status=0
	wait "$broker_pid" || status=$?
	if ((broker_in >= 0)); then exec {broker_in}>&-; fi
	exec {broker_out}<&-
	broker_in=-1
}

# Closes the broker's stdin.
close_broker_stdin() {
	exec {broker_in}>&-
	broker_in=-1
}

# Prints the metadata of all topics.
metadata() {
	kc -b "$addr" -L -m 5
}

# Checks that metadata lists a topic with the given number of partitions.
has_partitions() {
	grep -qF "topic \"$2\" with $3 partitions:" <<<"$1"
}

build_broker() {
	local src=$HERE/flyt_broker.c
	if [[ -n ${FLYT_BROKER:-} ]]; then
		BROKER=$FLYT_BROKER
	else
		BROKER=$HERE/flyt_broker
		if [[ ! -x $BROKER || $src -nt $BROKER ]]; then
			echo "building $BROKER"
			"${CC:-cc}" -Wall -Wextra -O2 -o "$BROKER" "$src" -lrdkafka
		fi
	fi
	if ! command -v kcat >/dev/null; then
		echo "kcat is not installed" >&2
		exit 2
	fi
}

build_broker

# --- main broker, flyt topics --------------------------------------------

start_broker --topics-for "$ORG"
read_bootstrap
main_port=${addr##*:}

md=$(metadata) || md=""
for t in "${FLYT_TOPICS[@]}"; do
	check "topic $t has 1 partition" has_partitions "$md" "$t" 1
done
check "no other topics exist" grep -q "^ ${#FLYT_TOPICS[@]} topics:" <<<"$md"

# Produce with key and header, consume it back.
T=$PREFIX.instance-received
if printf 'hello flyt\n' | kc -P -b "$addr" -t "$T" -k key-1 -H name=value; then
	pass "produce with key and header"
else
	fail "produce with key and header"
fi
got=$(kc -C -b "$addr" -t "$T" -o beginning -c 1 -e -f '%k %h %s\n') || true
check "consume returns key, header and value" [ "$got" = "key-1 name=value hello flyt" ]

# Commands.
expect_reply "topic command creates a topic" "topic extra.topic 3" "ok topic extra.topic 3"
md=$(metadata) || md=""
check "extra topic has 3 partitions" has_partitions "$md" extra.topic 3
expect_reply "existing topic is an error" "topic extra.topic" "error topic extra.topic: *"
expect_reply "invalid topic name is an error" "topic bad/name" "error topic: *"
expect_reply "unknown broker is an error" "down 7" "error down: no broker *"
expect_reply "unknown command is an error" "frobnicate" "error unknown command *"
expect_reply "rtt without milliseconds is an error" "rtt" "error usage: rtt *"
expect_reply "rtt of a word is an error" "rtt soon" "error rtt: *"
expect_reply "rtt of an unknown broker is an error" "rtt 10 7" "error rtt: no broker *"

# A round-trip time delays every answer: an acknowledged produce takes at
# least that long (a lower bound, whatever the host's speed), and none after
# "rtt 0".
expect_reply "rtt answers ok" "rtt 1500" "ok rtt 1500 all"
t0=$(date +%s%N)
printf 'delayed\n' | kc -P -b "$addr" -t extra.topic -k key-rtt -X message.timeout.ms=20000 || true
waited_ms=$((($(date +%s%N) - t0) / 1000000))
check "a produce under rtt 1500 takes at least 1.5 s (took $waited_ms ms)" [ "$waited_ms" -ge 1500 ]
expect_reply "rtt 0 answers ok" "rtt 0" "ok rtt 0 all"

# Broker down: producing and metadata fail.
expect_reply "down answers ok" "down" "ok down all"
if printf 'while down\n' | kc -P -b "$addr" -t "$T" -k key-2 -X message.timeout.ms=2000; then
	fail "produce fails while the broker is down"
else
	pass "produce fails while the broker is down"
fi
if kc -b "$addr" -L -m 2 >/dev/null; then
	fail "metadata fails while the broker is down"
else
	pass "metadata fails while the broker is down"
fi

# Broker up again: produce and consume work.
expect_reply "up answers ok" "up" "ok up all"
if printf 'after up\n' | kc -P -b "$addr" -t "$T" -k key-3 -H again=yes; then
	pass "produce works after up"
else
	fail "produce works after up"
fi
got=$(kc -C -b "$addr" -t "$T" -o beginning -e -f '%o %k %h %s\n') || true
check "consume after up sees both messages, nothing from the down time" \
	[ "$got" = $'0 key-1 name=value hello flyt\n1 key-3 again=yes after up' ]

# Committed offsets of a consumer group survive the consumer.  The mock
# keeps a member that left until its session times out, so keep that short.
G=$PREFIX.instance-dispatched
group_opts=(-X auto.offset.reset=earliest -X session.timeout.ms=6000
	-X heartbeat.interval.ms=500 -f '%o %s\n')
printf 'g1\ng2\ng3\n' | kc -P -b "$addr" -t "$G" -k k || true
got=$(kc -G flyt-test-group -b "$addr" "${group_opts[@]}" -c 2 "$G") || true
check "group consumer reads from the start" [ "$got" = $'0 g1\n1 g2' ]
got=$(kc -G flyt-test-group -b "$addr" "${group_opts[@]}" -c 1 "$G") || true
check "group consumer resumes at the committed offset" [ "$got" = "2 g3" ]

expect_reply "quit answers ok" "quit" "ok quit"
wait_broker_exit
check "quit exits with status 0" [ "$status" = 0 ]

# --- fixed port, reusing the main broker's port; end of input ------------

start_broker --port "$main_port" --topic t.one
read_bootstrap
check "--port gives the fixed address" [ "$addr" = "127.0.0.1:$main_port" ]
md=$(metadata) || md=""
check "--topic creates a one-partition topic" has_partitions "$md" t.one 1

rc=0
set_budget
timeout "$budget" "$BROKER" --port "$main_port" </dev/null >/dev/null 2>"$WORK/inuse.err" || rc=$?
check "a port in use fails with status 1" [ "$rc" = 1 ]
check "a port in use is reported" grep -q "Address already in use" "$WORK/inuse.err"

close_broker_stdin
wait_broker_exit
check "end of input exits with status 0" [ "$status" = 0 ]

# --- three brokers; SIGTERM ----------------------------------------------

start_broker --brokers 3 --topic t.three
read_bootstrap
check "bootstrap lists three brokers" [ "$(tr ',' '\n' <<<"$addr" | wc -l)" = 3 ]
md=$(metadata) || md=""
check "metadata shows three brokers" grep -q "^ 3 brokers:" <<<"$md"
expect_reply "down 2 answers ok" "down 2" "ok down 2"
expect_reply "up 2 answers ok" "up 2" "ok up 2"
kill -TERM "$broker_pid"
wait_broker_exit
check "SIGTERM exits with status 0" [ "$status" = 0 ]

# --- usage errors --------------------------------------------------------

rc=0
"$BROKER" --brokers 0 </dev/null >/dev/null 2>&1 || rc=$?
check "a bad option exits with status 2" [ "$rc" = 2 ]

finish
