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
if wait_status_up 45; then
	pass "status UP"
else
	bail "status UP" "flyt_status(): $(show_status)"
fi

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
check_eq "the server never crashed" 0 "$(grep -c 'terminated by signal' "$CLUSTER_LOG" || true)"

finish
