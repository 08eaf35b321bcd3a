#!/usr/bin/env bash
#
# worker_roundtrip.sh — the background worker end to end against the
# embedded broker (broker/flyt_broker), checked with kcat:
#
#   - instance-received → flyt.instance row, flyt.consumer_offset, and an
#     instance-registered message (key, flow headers + instanceId,
#     flyt.event-id, the DTO); delivered outbox rows are deleted;
#   - flyt_retry → instance-requested-for-retry with the new correlationId;
#   - a retry that commits after later retries were sent is sent too, ahead
#     of what is queued after its commit (the pump's scan position);
#   - instance-dispatched → row deleted, instance-deleted with a null value
#     and the dispatched record's headers (as the original);
#   - bad messages (value not JSON, invalid instance, header missing, header
#     not JSON, header without sourceApplicationId, refused by a constraint
#     only when stored, which fails the batch's set of registrations and
#     makes the worker apply it one message at a time) → one flyt.dead_letter
#     row each, registration-error events where the headers are readable,
#     and the next message is applied;
#   - flyt_status() UP, flyt_metrics() counters;
#   - redelivery after a restart (fast, then immediate) and a consumer group
#     without committed offsets (application_id changed) never register an
#     instance twice: the offsets stored in the database win.
#
# Own broker and cluster; both always stopped.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

# jq programs are single-quoted on purpose; functions called through
# wait_until look unreachable.
# shellcheck disable=SC2016,SC2119,SC2317
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

it_setup 420

# Next offset of instance-received partition 0: this script is its only
# producer, so each message's offset is known.
recv_next=0

# produce_received KEY VALUE [-H ...]... — one instance-received message.
produce_received() {
	if produce "$T_RECEIVED" "$@"; then
		recv_next=$((recv_next + 1))
	else
		bail "kcat could not produce to $T_RECEIVED" "$(tail -n 5 "$WORK/kcat.err")"
	fi
}

# headers_with JQ_ASSIGNMENTS — the fixture headers, changed.
headers_with() {
	jq -c "$1" <<<"$FIX_HEADERS"
}

new_uuid() {
	cat /proc/sys/kernel/random/uuid
}

outbox_empty() {
	sql_is 0 "SELECT count(*) FROM flyt.outbox"
}

broker_start
worker_cluster_start
require_worker

# --- the worker runs ------------------------------------------------------------

if wait_status_up 45; then
	pass "flyt_status()->>'status' becomes UP"
else
	bail "flyt_status()->>'status' becomes UP" "flyt_status(): $(show_status)"
fi
check_eq "worker state is running" running "$(status_field "->'worker'->>'state'")"

# --- instance-received → instance, offset, instance-registered ---------------------

produce_received rt-key-1 "$FIX_VALUE" -H "$H_FLOW=$FIX_HEADERS"
if wait_until 45 sql_is 1 "SELECT count(*) FROM flyt.instance"; then
	pass "instance-received is stored as one flyt.instance row"
else
	bail "instance-received is stored as one flyt.instance row" \
		"instances: $(sql_quiet 'SELECT count(*) FROM flyt.instance')" \
		"dead letters: $(sql_quiet 'SELECT jsonb_agg(failure_details) FROM flyt.dead_letter')" \
		"flyt_status(): $(show_status)"
fi
ID=$(sql "SELECT max(id) FROM flyt.instance")
check_eq "consumer_offset of instance-received/0 is 1" 1 \
	"$(sql "SELECT next_offset FROM flyt.consumer_offset WHERE topic = '$T_RECEIVED' AND kafka_partition = 0")"
check_eq "stored flow headers are the fixture's with instanceId" t \
	"$(sql -v h="$FIX_HEADERS" "SELECT flow_headers = (:'h'::jsonb || jsonb_build_object('instanceId', id)) FROM flyt.instance WHERE id = $ID")"

DTO=$(sql "SELECT flyt_instance($ID)")
STORED=$(sql "SELECT flow_headers FROM flyt.instance WHERE id = $ID")

wait_messages "$T_REGISTERED" 1 || fail "an instance-registered message appears"
F=$WORK/$T_REGISTERED.json
jcheck "registered: exactly one message" "$F" 'length == 1'
jcheck "registered: key is the instance id" "$F" '.[0].key == ($id | tostring)' --argjson id "$ID"
jcheck "registered: flow headers = fixture headers + instanceId" "$F" \
	'.[0] | flow == ($h + {instanceId: $id})' --argjson h "$FIX_HEADERS" --argjson id "$ID"
jcheck "registered: flyt.event-id header present, a UUID" "$F" '.[0] | eventid | isuuid'
jcheck "registered: value = fixture value + id + createdAt (as Jackson writes a java.util.Date)" "$F" \
	'.[0].payload | fromjson | (del(.id, .createdAt) == $v) and .id == $id and (.createdAt | java_date)' \
	--argjson v "$FIX_VALUE" --argjson id "$ID"
jcheck "registered: value = flyt_instance(id)" "$F" '.[0].payload | fromjson == $dto' --argjson dto "$DTO"
REG_EVENT_ID=$(jval "$F" '.[0] | eventid // ""')
if wait_until "$WAIT" outbox_empty; then
	pass "flyt.outbox is empty after delivery"
else
	fail "flyt.outbox is empty after delivery" \
		"outbox: $(sql_quiet 'SELECT jsonb_agg(jsonb_build_object($$id$$, id, $$topic$$, topic, $$attempts$$, attempts, $$last_error$$, last_error)) FROM flyt.outbox')"
fi

# --- flyt_retry → instance-requested-for-retry --------------------------------------

CORR=$(sql "SELECT flyt_retry($ID)")
wait_messages "$T_RETRY" 1 || fail "an instance-requested-for-retry message appears"
F=$WORK/$T_RETRY.json
jcheck "retry: exactly one message" "$F" 'length == 1'
jcheck "retry: key is the instance id" "$F" '.[0].key == ($id | tostring)' --argjson id "$ID"
jcheck "retry: header correlationId is the one flyt_retry returned" "$F" \
	'.[0] | flow.correlationId == $c' --arg c "$CORR"
jcheck "retry: header = stored headers with the new correlationId" "$F" \
	'.[0] | flow == ($s + {correlationId: $c})' --argjson s "$STORED" --arg c "$CORR"
jcheck "retry: value = the DTO" "$F" '.[0].payload | fromjson == $dto' --argjson dto "$DTO"
jcheck "retry: flyt.event-id a UUID other than the registered one's" "$F" \
	'.[0] | eventid | isuuid and . != $r' --arg r "$REG_EVENT_ID"

# --- a row that commits after later rows were sent ------------------------------------
# The pump starts its scans after the ids it has handed over (pump.c): a
# transaction that took an outbox id and commits after rows with later ids
# went must still have its row sent, at once and ahead of what is queued
# after its commit (the topic has one partition, so its order is the
# order sent).  A pump that had moved past the row would find it only at
# its next scan from the head, after the later retry.

register_as() { # SOURCE_INSTANCE_ID — registers the fixture instance under that id, prints its id
	sql -v h="$(headers_with ".sourceApplicationInstanceId = \"$1\"")" -v v="$FIX_VALUE" \
		"SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb)"
}
LATE=$(register_as late-row)
OTHER=$(register_as after-late-row)
wait_until "$WAIT" outbox_empty || fail "the registrations are sent before the late retry"
RETRIES_BEFORE=$(topic_count "$T_RETRY")
mkfifo "$WORK/late.fifo"
psql -X -At -q -v ON_ERROR_STOP=1 -d postgres -f "$WORK/late.fifo" >"$WORK/late.out" 2>&1 &
LATE_PSQL=$!
exec 7>"$WORK/late.fifo"
printf '%s\n' "BEGIN;" "SELECT 'late', flyt_retry($LATE);" "SELECT 'late-id', max(id) FROM flyt.outbox;" >&7
if wait_until 30 grep -q '^late-id|' "$WORK/late.out"; then
	pass "a retry takes its outbox id and stays uncommitted"
else
	fail "a retry takes its outbox id and stays uncommitted" "$(cat "$WORK/late.out")"
fi
LATE_ID=$(sed -n 's/^late-id|//p' "$WORK/late.out")
for _ in 1 2 3 4 5; do sql "SELECT flyt_retry($OTHER)" >/dev/null; done
if wait_messages "$T_RETRY" $((RETRIES_BEFORE + 5)) && wait_until "$WAIT" outbox_empty; then
	pass "five later retries are sent while it is open"
else
	fail "five later retries are sent while it is open" "outbox: $(sql_quiet 'SELECT jsonb_agg(id) FROM flyt.outbox')"
fi
check_eq "the later retries took later outbox ids" t \
	"$(sql "SELECT last_value >= $LATE_ID + 5 FROM flyt.outbox_id_seq")"
printf '%s\n' "COMMIT;" >&7
exec 7>&-
wait "$LATE_PSQL" || fail "the late transaction commits" "$(cat "$WORK/late.out")"
sql "SELECT flyt_retry($OTHER)" >/dev/null
if wait_messages "$T_RETRY" $((RETRIES_BEFORE + 7)); then
	pass "the late row and a retry after it are both sent"
else
	fail "the late row and a retry after it are both sent" "outbox: $(sql_quiet 'SELECT jsonb_agg(id) FROM flyt.outbox')"
fi
jcheck "the late row (outbox id $LATE_ID) is sent before the retry queued after its commit" "$WORK/$T_RETRY.json" \
	'.[$n:] | map(.key) == [($late | tostring), ($other | tostring)]' \
	--argjson n "$((RETRIES_BEFORE + 5))" --argjson late "$LATE" --argjson other "$OTHER"

# --- instance-dispatched → deleted, instance-deleted ---------------------------------

STORED=$(sql "SELECT flow_headers FROM flyt.instance WHERE id = $ID")
# What the dispatcher sends: the flow headers with instanceId (and, as in
# real life, the archive fields filled in).
DISP_HEADERS=$(jq -c '. + {configurationId: 5, archiveInstanceId: "ARK-2026-1"}' <<<"$STORED")
if produce "$T_DISPATCHED" "$ID" '{"dispatched":true}' -H "$H_FLOW=$DISP_HEADERS"; then
	pass "produce instance-dispatched"
else
	fail "produce instance-dispatched" "$(tail -n 5 "$WORK/kcat.err")"
fi
if wait_until 45 sql_is 0 "SELECT count(*) FROM flyt.instance WHERE id = $ID"; then
	pass "instance-dispatched deletes the instance"
else
	fail "instance-dispatched deletes the instance" \
		"dead letters: $(sql_quiet 'SELECT jsonb_agg(failure_details) FROM flyt.dead_letter')"
fi
check_eq "consumer_offset of instance-dispatched/0 is 1" 1 \
	"$(sql "SELECT next_offset FROM flyt.consumer_offset WHERE topic = '$T_DISPATCHED' AND kafka_partition = 0")"
check_eq "history records DISPATCHED" 1 \
	"$(sql "SELECT count(*) FROM flyt_instance_history($ID) WHERE event_type = 'DISPATCHED'")"
wait_messages "$T_DELETED" 1 || fail "an instance-deleted message appears"
F=$WORK/$T_DELETED.json
jcheck "deleted: exactly one message" "$F" 'length == 1'
jcheck "deleted: key is the instance id" "$F" '.[0].key == ($id | tostring)' --argjson id "$ID"
jcheck "deleted: value is null" "$F" '.[0].payload == null'
jcheck "deleted: header instanceId, correlationId, sourceApplicationId as stored" "$F" \
	'.[0] | flow as $f | [$f.instanceId, $f.correlationId, $f.sourceApplicationId] == [$s.instanceId, $s.correlationId, $s.sourceApplicationId]' \
	--argjson s "$STORED"
# As the original: the dispatched record's headers, not the stored ones.
jcheck "deleted: header = the dispatched record's flow headers" "$F" '.[0] | flow == $d' --argjson d "$DISP_HEADERS"
jcheck "deleted: flyt.event-id a UUID" "$F" '.[0] | eventid | isuuid'

# --- bad messages: dead letter, error event, the next one is applied --------------------

# bad_case N NAME VALUE [-H ...]... — produce the bad message, then a valid
# one (sourceApplicationInstanceId after-N); check both outcomes.
bad_case() {
	local n=$1 name=$2 value=$3 bad_offset
	shift 3
	bad_offset=$recv_next
	produce_received "bad-$n" "$value" "$@"
	produce_received "after-$n" "$FIX_VALUE" \
		-H "$H_FLOW=$(headers_with ".correlationId = \"$(new_uuid)\" | .sourceApplicationInstanceId = \"after-$n\"")"
	if wait_until 45 sql_is 1 "SELECT count(*) FROM flyt.instance WHERE source_application_instance_id = 'after-$n'"; then
		pass "$name: the valid message after it is registered"
	else
		fail "$name: the valid message after it is registered" \
			"consumer_offset: $(sql_quiet "SELECT next_offset FROM flyt.consumer_offset WHERE topic = '$T_RECEIVED'")" \
			"flyt_status(): $(show_status)"
	fi
	check_eq "$name: one dead letter at topic $T_RECEIVED offset $bad_offset" 1 \
		"$(sql "SELECT count(*) FROM flyt.dead_letter WHERE topic = '$T_RECEIVED' AND kafka_offset = $bad_offset")"
	check_eq "$name: dead letter is PERMANENT, partition 0, with an errorMessage" "PERMANENT|0|t" \
		"$(sql "SELECT failure_transience, kafka_partition, coalesce(failure_details->>'errorMessage', '') <> '' FROM flyt.dead_letter WHERE topic = '$T_RECEIVED' AND kafka_offset = $bad_offset ORDER BY id LIMIT 1")"
	note "$name: errorMessage: $(sql_quiet "SELECT failure_details->>'errorMessage' FROM flyt.dead_letter WHERE kafka_offset = $bad_offset AND topic = '$T_RECEIVED' LIMIT 1")"
	check_eq "$name: the valid message after it is not dead-lettered" 0 \
		"$(sql "SELECT count(*) FROM flyt.dead_letter WHERE topic = '$T_RECEIVED' AND kafka_offset = $((bad_offset + 1))")"
}

C1=$(new_uuid)
C2=$(new_uuid)
C5=$(new_uuid)
H1=$(headers_with ".correlationId = \"$C1\" | .sourceApplicationInstanceId = \"bad-1\"")
H2=$(headers_with ".correlationId = \"$C2\" | .sourceApplicationInstanceId = \"bad-2\"")
H5=$(headers_with "del(.sourceApplicationId) | .correlationId = \"$C5\" | .sourceApplicationInstanceId = \"bad-5\"")
DL_BEFORE=$(sql "SELECT count(*) FROM flyt.dead_letter")
check_eq "no dead letters before the bad messages" 0 "$DL_BEFORE"

bad_case 1 "value not JSON" 'this is {not json' -H "$H_FLOW=$H1"
bad_case 2 "invalid instance (valuePerKey value an object)" '{"valuePerKey":{"tittel":{"x":42}},"objectCollectionPerKey":{}}' -H "$H_FLOW=$H2"
bad_case 3 "header missing" "$FIX_VALUE"
bad_case 4 "header not JSON" "$FIX_VALUE" -H "$H_FLOW=not json at all"
bad_case 5 "header without sourceApplicationId" "$FIX_VALUE" -H "$H_FLOW=$H5"
# Refused only by the database (a constraint added later): the registrations
# of a batch are stored together, so this fails the set; the batch is then
# applied one message at a time, which finds this one.
C6=$(new_uuid)
H6=$(headers_with ".correlationId = \"$C6\" | .sourceApplicationInstanceId = \"bad-6\"")
sql "ALTER TABLE flyt.instance ADD CONSTRAINT roundtrip_refused CHECK (source_application_instance_id IS DISTINCT FROM 'bad-6')" >/dev/null
log_from=$(stat -c %s "$CLUSTER_LOG")
bad_case 6 "refused by a constraint when stored" "$FIX_VALUE" -H "$H_FLOW=$H6"
sql "ALTER TABLE flyt.instance DROP CONSTRAINT roundtrip_refused" >/dev/null
check_eq "case 6: the worker says it applied the batch one message at a time" 1 \
	"$(tail -c +"$((log_from + 1))" "$CLUSTER_LOG" | grep -c 'storing consumed registrations together failed (SQLSTATE 23514)' || true)"
check_eq "case 6: the dead letter names the constraint" 1 \
	"$(sql "SELECT count(*) FROM flyt.dead_letter WHERE topic = '$T_RECEIVED' AND failure_details->>'errorMessage' LIKE '%roundtrip_refused%'")"

check_eq "six dead letters in all" 6 "$(sql "SELECT count(*) FROM flyt.dead_letter")"
check_eq "no instance from a bad message" 0 \
	"$(sql "SELECT count(*) FROM flyt.instance WHERE source_application_instance_id LIKE 'bad-%'")"

wait_messages "$T_REG_ERROR" 3 || fail "registration-error messages appear"
wait_until "$WAIT" outbox_empty || fail "outbox empty after the error events"
snapshot "$T_REG_ERROR"
F=$WORK/$T_REG_ERROR.json
for c in 1 2 6; do
	corr_var=C$c
	jcheck "case $c: one registration-error event with its correlationId" "$F" \
		'[.[] | select(flow.correlationId == $c)] | length == 1' --arg c "${!corr_var}"
	jcheck "case $c: its value is the GENERAL_SYSTEM_ERROR payload" "$F" \
		'[.[] | select(flow.correlationId == $c) | .payload | fromjson] == [$e]' \
		--arg c "${!corr_var}" --argjson e "$ERROR_VALUE"
	jcheck "case $c: its flow headers are the received ones" "$F" \
		'[.[] | select(flow.correlationId == $c) | flow | del(.instanceId)] == [$h | del(.instanceId)]' \
		--arg c "${!corr_var}" --argjson h "$(case $c in 1) echo "$H1" ;; 2) echo "$H2" ;; *) echo "$H6" ;; esac)"
	jcheck "case $c: it has a UUID flyt.event-id" "$F" \
		'[.[] | select(flow.correlationId == $c) | eventid | isuuid] == [true]' --arg c "${!corr_var}"
done
jcheck "no registration-error event without readable headers (3 or 4 in all)" "$F" \
	'length == 3 or length == 4'
n5=$(jval "$F" '[.[] | select(flow.correlationId == $c)] | length' --arg c "$C5")
note "header without sourceApplicationId gave $n5 registration-error event(s) (either is acceptable)"
if [ "$n5" -gt 0 ]; then
	jcheck "case 5: its error value is the GENERAL_SYSTEM_ERROR payload" "$F" \
		'[.[] | select(flow.correlationId == $c) | .payload | fromjson] | all(. == $e)' \
		--arg c "$C5" --argjson e "$ERROR_VALUE"
fi

# --- status and metrics --------------------------------------------------------------

check_eq "flyt_status()->>'status' is UP" UP "$(status_field "->>'status'")"
check_eq "flyt_status()->>'dead_letters' is 6" 6 "$(status_field "->>'dead_letters'")"
if wait_until "$WAIT" sql_is 0 "SELECT flyt_status()->'consumer'->>'lag'"; then
	pass "consumer lag reaches 0"
else
	fail "consumer lag reaches 0" "consumer: $(status_field "->'consumer'")"
fi
for m in flyt_instance_consumed_total flyt_instance_produced_total; do
	v=$(metric_sum "$m")
	if [ -n "$v" ] && awk -v v="$v" 'BEGIN { exit !(v > 0) }'; then
		pass "flyt_metrics(): $m = $v > 0"
	else
		fail "flyt_metrics(): $m > 0" "got: '$v'" \
			"metrics: $(sql_quiet 'SELECT flyt_metrics()' | grep -E "^$m" | head -n 5 | tr '\n' ' ')"
	fi
done

# --- redelivery after restarts never registers twice ------------------------------------

# restart_round MODE NAME — restart the cluster (fast or immediate), then
# produce one more valid message and wait for it, so the consumer has
# certainly read everything again from its stored offsets.
restart_round() {
	local mode=$1 name=$2 n_inst n_reg n_dl n_new
	wait_until "$WAIT" outbox_empty || fail "$name: outbox empty before the restart"
	n_inst=$(sql "SELECT count(*) FROM flyt.instance")
	n_dl=$(sql "SELECT count(*) FROM flyt.dead_letter")
	n_reg=$(topic_count "$T_REGISTERED")
	if [ "$mode" = new-group ]; then
		# A consumer group without committed offsets would start at the
		# earliest offset: only the stored offsets keep it from applying
		# everything again.
		sql "ALTER SYSTEM SET flyt_instance.application_id = 'flyt-it-fresh-group'" >/dev/null
		sql "SELECT pg_reload_conf()" >/dev/null
		if wait_until "$WAIT" grep -q 'Kafka settings changed' "$CLUSTER_LOG"; then
			pass "$name: the worker reconnects with the new consumer group"
		else
			fail "$name: the worker reconnects with the new consumer group" "no 'Kafka settings changed' in the server log"
		fi
	elif without_broker_fds cluster_restart "$mode"; then
		pass "$name: cluster restarted ($mode)"
	else
		bail "$name: cluster restarted ($mode)"
	fi
	if wait_status_up 60; then
		pass "$name: status UP again"
	else
		fail "$name: status UP again" "flyt_status(): $(show_status)"
	fi
	produce_received "$name" "$FIX_VALUE" \
		-H "$H_FLOW=$(headers_with ".correlationId = \"$(new_uuid)\" | .sourceApplicationInstanceId = \"$name\"")"
	if wait_until 60 sql_is 1 "SELECT count(*) FROM flyt.instance WHERE source_application_instance_id = '$name'"; then
		pass "$name: a new message is consumed after the restart"
	else
		fail "$name: a new message is consumed after the restart" "flyt_status(): $(show_status)"
	fi
	check_eq "$name: instance count is the old one + 1 (nothing registered twice)" \
		"$((n_inst + 1))" "$(sql "SELECT count(*) FROM flyt.instance")"
	check_eq "$name: no source instance id registered twice" 0 \
		"$(sql "SELECT count(*) FROM (SELECT source_application_instance_id FROM flyt.instance GROUP BY 1 HAVING count(*) > 1) d")"
	check_eq "$name: no new dead letters from redelivered bad messages" "$n_dl" \
		"$(sql "SELECT count(*) FROM flyt.dead_letter")"
	check_eq "$name: consumer_offset of instance-received/0 is $recv_next" "$recv_next" \
		"$(sql "SELECT next_offset FROM flyt.consumer_offset WHERE topic = '$T_RECEIVED' AND kafka_partition = 0")"
	wait_until "$WAIT" outbox_empty || fail "$name: outbox empty after the restart"
	wait_messages "$T_REGISTERED" "$((n_reg + 1))" || true
	n_new=$(jval "$WORK/$T_REGISTERED.json" 'length')
	if [ "$mode" != immediate ]; then
		check_eq "$name: instance-registered messages: the old $n_reg + 1" "$((n_reg + 1))" "$n_new"
	else
		# After a crash a delivered row may be sent again (at-least-once):
		# duplicates must carry the same flyt.event-id.
		check "$name: instance-registered messages: at least $((n_reg + 1))" [ "$n_new" -ge $((n_reg + 1)) ]
	fi
	jcheck "$name: distinct flyt.event-id values = $((n_reg + 1)) registered instances" \
		"$WORK/$T_REGISTERED.json" '[.[] | eventid] | unique | length == $n' --argjson n "$((n_reg + 1))"
	jcheck "$name: distinct keys (instance ids) = $((n_reg + 1))" \
		"$WORK/$T_REGISTERED.json" '[.[] | .key] | unique | length == $n' --argjson n "$((n_reg + 1))"
}

restart_round fast after-restart
restart_round immediate after-crash
restart_round new-group after-group-change

finish
