#!/usr/bin/env bash
#
# kafka_broker.sh — the real Apache Kafka of script/kafka.sh, which the
# worker suites can choose instead of the embedded mock (kafka_start in
# lib.sh), checked on its own with kcat and Kafka's admin CLI classes:
#
#   - it starts (KRaft, one node on loopback) and kcat -L answers; the start
#     time is printed as a note;
#   - kafka_create_topics makes the topic set of the mock's --topics-for;
#     topics are not auto-created;
#   - kcat produces and consumes a message with a key and two headers;
#   - kafka-topics creates a topic with 3 partitions and describes it;
#     kafka-configs sets retention.ms and max.message.bytes, reads them
#     back, removes one and keeps the other;
#   - a kcat consumer group commits its offsets and kafka-consumer-groups
#     shows them with lag 0, then resets them to the earliest offset;
#   - kill -9 and restart: same address, nothing lost, groups and configs
#     kept;
#   - kafka_down stops the JVM (and a second call is harmless).
#
# KAFKA_VERSION picks the release (default: the pom's, the newest 3.9.x).
# Prints ok/not ok lines and "N passed, M failed"; exit status non-zero on
# any failure.  The broker is always stopped.

# jq programs are single-quoted on purpose; functions called through
# check/wait_until look unreachable.
# shellcheck disable=SC2016,SC2119,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

T_THREE=flyt-test.three-partitions
GROUP=flyt-test-group

# gone PID — no such process (any more).
gone() {
	! kill -0 "$1" 2>/dev/null
}

# unreachable — kcat gets no metadata from $BOOTSTRAP.
unreachable() {
	! timeout 10 kcat -L -b "$BOOTSTRAP" -m 2 >/dev/null 2>&1
}

# absent TOPIC — the broker does not know TOPIC.
absent() {
	! kafka_topic_partitions "$1" >/dev/null
}

# check_admin NAME COMMAND... — one result from an admin tool run; its
# output is shown only when it fails.
check_admin() {
	local name=$1
	shift
	if "$@" >"$WORK/admin.out" 2>&1; then
		pass "$name"
	else
		fail "$name" "$(tail -n 10 "$WORK/admin.out")"
	fi
}

kafka_start
pass "a real Kafka $KAFKA_RUNNING_VERSION answers kcat -L at $BOOTSTRAP"
note "start time (script start to kcat answering): ${KAFKA_START_SECONDS}s"

# --- topics ---------------------------------------------------------------------

t0=$SECONDS
check_admin "kafka_create_topics creates the flyt topics of $ORG" kafka_create_topics "$ORG"
note "kafka_create_topics took $((SECONDS - t0))s"
kafka_topics --list >"$WORK/topics.txt" 2>>"$WORK/kafka.err" || true
kafka_flyt_topics "$ORG" | sort >"$WORK/expected-topics.txt"
missing=$(grep -vxF -f "$WORK/topics.txt" "$WORK/expected-topics.txt" || true)
check_eq "every topic of the mock's --topics-for exists" "" "$missing"
check_eq "$T_RECEIVED has 1 partition" 1 "$(kafka_topic_partitions "$T_RECEIVED" || echo none)"

# A producer must not create a topic by accident.
if printf 'x\n' | timeout 20 kcat -P -b "$BOOTSTRAP" -t flyt-test.not-there \
	-X message.timeout.ms=3000 2>>"$WORK/kcat.err"; then
	fail "producing to an unknown topic fails (auto.create.topics.enable=false)"
else
	pass "producing to an unknown topic fails (auto.create.topics.enable=false)"
fi
check "and does not create it" absent flyt-test.not-there

# --- kcat round trip with headers ----------------------------------------------

check "kcat produces a message with a key and two headers" \
	produce "$T_RECEIVED" key-1 "$FIX_VALUE" -H "$H_FLOW=$FIX_HEADERS" -H "$H_EVENT_ID=42"
if wait_messages "$T_RECEIVED" 1; then
	pass "kcat consumes it"
else
	fail "kcat consumes it" "$(tail -n 5 "$WORK/kcat.err")"
fi
jcheck "key, value and both headers come back unchanged" "$WORK/$T_RECEIVED.json" '
	length == 1 and .[0].key == "key-1"
	and (.[0].payload | fromjson) == ($v | fromjson)
	and (.[0] | flow | tojson) == ($h | fromjson | tojson)
	and (.[0] | eventid) == "42"
	and .[0].partition == 0 and .[0].offset == 0' \
	--arg v "$FIX_VALUE" --arg h "$FIX_HEADERS"

# --- admin: topics and configs -----------------------------------------------------

check_admin "kafka-topics creates a topic with 3 partitions" \
	kafka_topics --create --topic "$T_THREE" --partitions 3 --replication-factor 1
kafka_topics --describe --topic "$T_THREE" >"$WORK/describe.txt" 2>>"$WORK/kafka.err" || true
check_eq "kafka-topics --describe shows 3 partitions" 3 \
	"$(grep -c "Topic: ${T_THREE}[[:space:]]*Partition: [0-2][[:space:]]" "$WORK/describe.txt" || true)"
check_eq "kafka_topic_partitions says 3" 3 "$(kafka_topic_partitions "$T_THREE" || echo none)"

check_admin "kafka-configs sets retention.ms and max.message.bytes" \
	kafka_configs --alter --entity-type topics --entity-name "$T_THREE" \
	--add-config retention.ms=3600000,max.message.bytes=2000000
check_eq "kafka-configs reads retention.ms back" 3600000 \
	"$(kafka_topic_config "$T_THREE" retention.ms || echo error)"
check_eq "kafka-configs reads max.message.bytes back" 2000000 \
	"$(kafka_topic_config "$T_THREE" max.message.bytes || echo error)"
check_admin "kafka-configs removes retention.ms" \
	kafka_configs --alter --entity-type topics --entity-name "$T_THREE" \
	--delete-config retention.ms
check_eq "retention.ms is no longer set on the topic" "" \
	"$(kafka_topic_config "$T_THREE" retention.ms || echo error)"
check_eq "max.message.bytes stays" 2000000 \
	"$(kafka_topic_config "$T_THREE" max.message.bytes || echo error)"

# --- consumer groups ------------------------------------------------------------------

for i in 1 2 3 4 5 6; do
	produce "$T_THREE" "k$i" "v$i" || bail "kcat could not produce to $T_THREE" \
		"$(tail -n 5 "$WORK/kcat.err")"
done
# kcat -G: joins the group, reads to the end of every partition, commits
# on close (auto commit).
timeout 60 kcat -C -b "$BOOTSTRAP" -G "$GROUP" "$T_THREE" -e -q -f '%k\n' \
	-X auto.offset.reset=earliest >"$WORK/group.txt" 2>>"$WORK/kcat.err" || true
check_eq "a kcat consumer group reads all 6 messages" "k1 k2 k3 k4 k5 k6" \
	"$(sort "$WORK/group.txt" | tr '\n' ' ' | sed 's/ $//')"

# group_sum COLUMN — sum of a column of kafka_group_offsets (3 = current
# offset, 5 = lag) over the partitions of $T_THREE.
group_sum() {
	kafka_group_offsets "$GROUP" |
		awk -v c="$1" -v t="$T_THREE" '$1 == t { s += $c; n++ } END { if (n) print n " " s }'
}
check_eq "kafka-consumer-groups: 3 partitions, committed offsets sum to 6" "3 6" "$(group_sum 3)"
check_eq "kafka-consumer-groups: lag 0" "3 0" "$(group_sum 5)"
check_admin "kafka-consumer-groups resets the group to the earliest offsets" \
	kafka_groups --reset-offsets --group "$GROUP" --topic "$T_THREE" --to-earliest --execute
check_eq "the group's lag is 6 after the reset" "3 6" "$(group_sum 5)"

# --- kill -9 and restart -----------------------------------------------------------

old_bootstrap=$BOOTSTRAP
old_pid=$KAFKA_PID
check "kafka_kill9 kills the broker" kafka_kill9
check "its JVM is gone" gone "$old_pid"
check "kcat cannot reach it" unreachable
kafka_restart_checked
check_eq "it comes back at the same address" "$old_bootstrap" "$KAFKA_BOOTSTRAP"
note "restart after kill -9: ${KAFKA_START_SECONDS}s"
check_eq "$T_THREE still has its 6 messages" 6 "$(topic_count "$T_THREE" || echo error)"
check_eq "and $T_RECEIVED its 1" 1 "$(topic_count "$T_RECEIVED" || echo error)"
check_eq "the group's offsets survive" "3 6" "$(group_sum 5)"
check_eq "max.message.bytes survives" 2000000 \
	"$(kafka_topic_config "$T_THREE" max.message.bytes || echo error)"
check "kcat produces after the restart" produce "$T_THREE" k7 v7
check_eq "and reads it back" 7 "$(topic_count "$T_THREE" || echo error)"

# --- stop ---------------------------------------------------------------------------------

pid=$KAFKA_PID
t0=$SECONDS
kafka_down
check "kafka_down stops the JVM" gone "$pid"
note "kafka_down took $((SECONDS - t0))s"
check "a second kafka_down is harmless" kafka_down
check "the broker's log is in the test's directory" test -s "$KAFKA_LOG"

finish
