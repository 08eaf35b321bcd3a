#!/usr/bin/env bash
#
# worker_large.sh — large instances through Kafka (issue: flyt_instance()
# once read its DTO after SPI had freed it, and crashed the server for
# instances of 100 kB and more).  Instances of 100 kB and 700 kB (below
# librdkafka's default message.max.bytes of 1 MB) are consumed from
# instance-received, stored, sent on as instance-registered, and retried as
# instance-requested-for-retry; every value on the topics is the DTO that
# flyt_instance() returns, byte for byte in content.  (1 MB and 10 MB
# instances are covered through SQL by test/sql/large.sql.)
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# shellcheck disable=SC2016,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 300

SIZES=(102400 716800)

broker_start
worker_cluster_start
require_worker
expect_status_up

for size in "${SIZES[@]}"; do
	# through a file: one argument may not be longer than 128 kB
	head -c "$size" /dev/zero | tr '\0' x >"$WORK/filler"
	value=$(jq -c --rawfile f "$WORK/filler" '.valuePerKey.filler = $f' <<<"$FIX_VALUE")
	headers=$(jq -c --arg c "$(cat /proc/sys/kernel/random/uuid)" '.correlationId = $c' <<<"$FIX_HEADERS")
	produce "$T_RECEIVED" "large-$size" "$value" -H "$H_FLOW=$headers" ||
		bail "kcat could not produce a $size-byte instance" "$(tail -n 5 "$WORK/kcat.err")"
done

if wait_until 60 sql_is "${#SIZES[@]}" "SELECT count(*) FROM flyt.instance"; then
	pass "both large instances are stored"
else
	bail "both large instances are stored" "dead letters: $(sql_quiet "SELECT jsonb_agg(failure_details) FROM flyt.dead_letter")"
fi
check_eq "stored sizes" "$(printf '%s\n' "${SIZES[@]}")" \
	"$(sql "SELECT length(flyt_instance(id)->'valuePerKey'->>'filler') FROM flyt.instance ORDER BY id")"
sql "SELECT jsonb_agg(flyt_instance(id) ORDER BY id) FROM flyt.instance" >"$WORK/dtos.json"

# dto_checks TOPIC NAME — the topic holds one message per instance, each
# value the DTO flyt_instance() returns for its key.
dto_checks() {
	local topic=$1 name=$2 f
	wait_messages "$topic" "${#SIZES[@]}" 60 || fail "$name: ${#SIZES[@]} messages on $topic"
	f=$WORK/$topic.json
	jcheck "$name: one message per instance" "$f" 'length == $n' --argjson n "${#SIZES[@]}"
	jcheck "$name: every value is the DTO of its key" "$f" \
		'($dtos[0] | map({(.id | tostring): .}) | add) as $by_id
		 | all(.[]; (.payload | fromjson) == $by_id[.key])' --slurpfile dtos "$WORK/dtos.json"
	jcheck "$name: the values keep their size" "$f" \
		'[.[] | .payload | fromjson | .valuePerKey.filler | length] | sort == $sizes' \
		--argjson sizes "$(printf '%s\n' "${SIZES[@]}" | jq -sc .)"
}

dto_checks "$T_REGISTERED" "instance-registered"

sql "SELECT flyt_retry(id) FROM flyt.instance ORDER BY id" >/dev/null
dto_checks "$T_RETRY" "instance-requested-for-retry"
if wait_until "$WAIT" sql_is 0 "SELECT count(*) FROM flyt.outbox"; then
	pass "the outbox empties"
else
	fail "the outbox empties" "flyt_status(): $(show_status)"
fi
check_eq "no dead letters" 0 "$(sql "SELECT count(*) FROM flyt.dead_letter")"

# --- larger than the producer can send ------------------------------------------------
# librdkafka sends at most message.max.bytes (1,000,000 by default); a
# larger instance is refused when it arrives instead of failing every
# delivery and ending as a dead letter after its redeliveries.
head -c 1100000 /dev/zero | tr '\0' x >"$WORK/filler"
value=$(jq -c --rawfile f "$WORK/filler" '.valuePerKey.filler = $f' <<<"$FIX_VALUE")
printf '%s' "$value" >"$WORK/value.json"
# (through a file: one argument may not be longer than 128 kB)
if out=$(sql -v h="$FIX_HEADERS" "\set v \`cat $WORK/value.json\`
SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb)" 2>&1); then
	fail "registering a 1.1 MB instance through SQL is refused" "it was stored as $out"
else
	check "registering a 1.1 MB instance through SQL is refused, naming message.max.bytes" \
		grep -q 'too large for Kafka' <<<"$out"
fi
produce "$T_RECEIVED" too-large "$value" -H "$H_FLOW=$FIX_HEADERS" -X message.max.bytes=2000000 ||
	fail "kcat produces a 1.1 MB instance-received" "$(tail -n 3 "$WORK/kcat.err")"
if wait_until 60 sql_is 1 "SELECT count(*) FROM flyt.dead_letter WHERE failure_details->>'sqlstate' = '54000'"; then
	pass "a consumed 1.1 MB instance is dead-lettered at once (54000)"
else
	fail "a consumed 1.1 MB instance is dead-lettered at once (54000)" \
		"dead letters: $(sql_quiet "SELECT jsonb_agg(failure_details) FROM flyt.dead_letter")"
fi
if wait_until 30 topic_has_at_least "$T_REG_ERROR" 1; then
	pass "and an instance-registration-error is sent"
else
	fail "and an instance-registration-error is sent"
fi
check_eq "nothing of it waits in the outbox" 0 "$(sql "SELECT count(*) FROM flyt.outbox")"
check_eq "the server never crashed" 0 "$(grep -c 'terminated by signal' "$CLUSTER_LOG" || true)"

finish
