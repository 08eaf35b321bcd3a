# shellcheck shell=bash
#
# test/integration/lib_contract.sh — the wire contract of the original
# fint-flyt-instance-service (INTEROP.md sections 2.4, 3, 5), checked record
# by record.  Sourced by contract.sh (the embedded broker) and
# kafka_contract.sh (a real Apache Kafka); source lib.sh first, start a
# broker and the cluster, then call contract_checks.
#
# For every topic flyt_instance produces, the record the original would
# produce for the same input, read back with kcat (an independent client):
#   - headers, names and bytes, in the original's order:
#     flyt.instance-flow-headers (Jackson's InstanceFlowHeaders: nine fields
#     in declaration order, nulls written, UUIDs lower case, unknown fields
#     dropped), origin.application.id (raw UTF-8 application id),
#     __TypeId__ (the Java class of the value; none on a null value), then
#     flyt.event-id (this service's own, a UUID);
#   - record timestamp: CreateTime = when the event happened (the
#     transaction that caused it), not when the worker sent it;
#   - value, by semantic JSON equality: the InstanceObjectDto with createdAt
#     as a java.util.Date and valuePerKey numbers/booleans as their text, an
#     ErrorCollection with "args": null, an InstanceErrorEvent;
#   - key: the instance id as text, where the original sends null (a
#     deliberate difference, README "Kafka wire contract");
#   - instance-deleted after instance-dispatched: the dispatched record's
#     headers, also when the instance was already gone;
# and a consumer that reads like fint-flyt-history-service
# (tools/history_consumer.py: skips records without origin.application.id
# or flow headers, stores the record timestamp) sees every event; a record
# without origin.application.id, produced by kcat, it skips.

# The flow headers as the original writes them, from the headers in $1 with
# instanceId $2 (a number or null): computed by jq, not by flyt_instance.
java_flow() {
	jq -c --argjson id "$2" '{sourceApplicationId, sourceApplicationIntegrationId,
		sourceApplicationInstanceId,
		fileIds: (if .fileIds == null then null else [.fileIds[] | ascii_downcase] end),
		correlationId: (.correlationId | ascii_downcase),
		integrationId, instanceId: $id, configurationId, archiveInstanceId}' <<<"$1"
}

# The last record of a topic snapshot, as a file of its own.
last_record() {
	jq '.[-1]' "$WORK/$1.json" >"$WORK/$2.json"
}

# header_names FILE — the record's header names, comma-separated.
header_names() {
	jq -r '[.headers as $h | range(0; ($h | length); 2) | $h[.]] | join(",")' "$1"
}

contract_checks() {
	local app=fint-flyt-instance-service
	local dto_type=no.novari.flyt.instance.model.dtos.InstanceObjectDto
	local recv_headers value expect_flow id created_ms created_java n_reg

	# --- instance-registered -------------------------------------------------
	# Received headers with an upper-case correlationId and a field the
	# original's class does not have; valuePerKey with a number in exponent
	# form, a decimal with a trailing zero, booleans and a null.
	recv_headers=$(jq -c '.correlationId |= ascii_upcase | .futureField = {"x": 1}' <<<"$FIX_HEADERS")
	value=$(jq -c '.valuePerKey += {"antall": 0, "belop": 0, "aktiv": true, "slettet": false, "tom": null}' <<<"$FIX_VALUE")
	# jq would write the numbers its own way: put them in as text.
	value=${value/'"antall":0'/'"antall":-2E+3'}
	value=${value/'"belop":0'/'"belop":1.50'}

	produce "$T_RECEIVED" contract-1 "$value" -H "$H_FLOW=$recv_headers" ||
		bail "kcat produces instance-received" "$(tail -n 5 "$WORK/kcat.err")"
	wait_messages "$T_REGISTERED" 1 45 || bail "instance-registered is produced"
	id=$(sql "SELECT max(id) FROM flyt.instance")
	created_ms=$(sql "SELECT floor(extract(epoch FROM created_at) * 1000)::bigint FROM flyt.instance WHERE id = $id")
	created_java=$(sql "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS') || '+00:00' FROM flyt.instance WHERE id = $id")
	expect_flow=$(java_flow "$recv_headers" "$id")
	last_record "$T_REGISTERED" reg

	check_eq "instance-registered: headers in the original's order, then flyt.event-id" \
		"flyt.instance-flow-headers,origin.application.id,__TypeId__,flyt.event-id" "$(header_names "$WORK/reg.json")"
	check_eq "instance-registered: flow headers byte for byte as Jackson writes InstanceFlowHeaders with the new instanceId" \
		"$expect_flow" "$(jval "$WORK/reg.json" 'hdr("flyt.instance-flow-headers")')"
	check_eq "instance-registered: origin.application.id = $app" "$app" "$(jval "$WORK/reg.json" 'hdr("origin.application.id")')"
	check_eq "instance-registered: __TypeId__ = $dto_type" "$dto_type" "$(jval "$WORK/reg.json" 'hdr("__TypeId__")')"
	jcheck "instance-registered: flyt.event-id is a UUID" "$WORK/reg.json" 'eventid | isuuid'
	check_eq "instance-registered: key = the instance id (the original: null; README)" "$id" "$(jval "$WORK/reg.json" '.key')"
	check_eq "instance-registered: timestamp type CreateTime" create "$(jval "$WORK/reg.json" '.tstype')"
	check_eq "instance-registered: timestamp = the registration's time (created_at, ms)" "$created_ms" "$(jval "$WORK/reg.json" '.ts')"
	jcheck "instance-registered: value = the original's InstanceObjectDto (createdAt as a java.util.Date, numbers and booleans as their text)" \
		"$WORK/reg.json" '(.payload | fromjson) == {
			"id": $id,
			"valuePerKey": ($in.valuePerKey + {"antall": "-2E+3", "belop": "1.50", "aktiv": "true", "slettet": "false", "tom": null}),
			"objectCollectionPerKey": $in.objectCollectionPerKey,
			"createdAt": $created}' \
		--argjson id "$id" --argjson in "$FIX_VALUE" --arg created "$created_java"
	jcheck "instance-registered: createdAt text is yyyy-MM-ddTHH:mm:ss.SSS+00:00" "$WORK/reg.json" \
		'(.payload | fromjson | .createdAt) | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}\\+00:00$")'

	# --- the timestamp is the event's time, not the send time -------------------
	# Nothing is sent before the transaction commits: the record of an
	# instance registered 1.5 s before its transaction committed carries the
	# registration's time.
	local out id2 ts2 commit_ms
	out=$(printf '%s\n' "BEGIN;" \
		"SELECT flyt_register_instance(:'h'::jsonb, :'v'::jsonb);" \
		"SELECT pg_sleep(1.5);" \
		"SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;" \
		"COMMIT;" |
		timeout 30 psql -X -At -q -v ON_ERROR_STOP=1 -v h="$FIX_HEADERS" -v v="$FIX_VALUE" -d postgres -f - | grep -v '^$')
	id2=$(sed -n 1p <<<"$out")
	commit_ms=$(sed -n 2p <<<"$out")
	n_reg=$(jq length "$WORK/$T_REGISTERED.json")
	wait_messages "$T_REGISTERED" $((n_reg + 1)) 30 || fail "instance-registered of a slow transaction is produced"
	last_record "$T_REGISTERED" reg2
	ts2=$(jval "$WORK/reg2.json" '.ts')
	check_eq "slow transaction: timestamp = its registration's time" \
		"$(sql "SELECT floor(extract(epoch FROM created_at) * 1000)::bigint FROM flyt.instance WHERE id = $id2")" "$ts2"
	if [ -n "$ts2" ] && [ -n "$commit_ms" ] && [ "$ts2" -le $((commit_ms - 1500)) ]; then
		pass "slow transaction: the timestamp lies 1.5 s or more before the commit (not the send time)"
	else
		fail "slow transaction: the timestamp lies 1.5 s or more before the commit (not the send time)" \
			"ts $ts2, commit at $commit_ms"
	fi

	# --- instance-requested-for-retry ---------------------------------------------
	local corr retry_ms
	out=$(sql "SELECT flyt_retry($id) || ' ' || floor(extract(epoch FROM now()) * 1000)::bigint")
	corr=${out% *}
	retry_ms=${out#* }
	wait_messages "$T_RETRY" 1 30 || fail "instance-requested-for-retry is produced"
	jq --arg c "$corr" '[.[] | select(.headers as $h | [range(1; ($h | length); 2) | $h[.]] | any(contains($c)))] | .[-1]' \
		"$WORK/$T_RETRY.json" >"$WORK/retry.json"
	check_eq "instance-requested-for-retry: headers in the original's order" \
		"flyt.instance-flow-headers,origin.application.id,__TypeId__,flyt.event-id" "$(header_names "$WORK/retry.json")"
	check_eq "instance-requested-for-retry: flow headers = the registered ones with the new correlationId" \
		"$(jq -c --arg c "$corr" '.correlationId = $c' <<<"$expect_flow")" "$(jval "$WORK/retry.json" 'hdr("flyt.instance-flow-headers")')"
	check_eq "instance-requested-for-retry: origin.application.id" "$app" "$(jval "$WORK/retry.json" 'hdr("origin.application.id")')"
	check_eq "instance-requested-for-retry: __TypeId__" "$dto_type" "$(jval "$WORK/retry.json" 'hdr("__TypeId__")')"
	check_eq "instance-requested-for-retry: timestamp = the retry's time" "$retry_ms" "$(jval "$WORK/retry.json" '.ts')"
	jcheck "instance-requested-for-retry: value = the registered DTO, read from the database" "$WORK/retry.json" \
		'(.payload | fromjson) == $reg' --argjson reg "$(jq -c '.payload | fromjson' "$WORK/reg.json")"

	# --- instance-deleted after instance-dispatched -------------------------------
	# The dispatching service's headers differ from the stored ones
	# (archiveInstanceId): the original sends the dispatched record's.
	local dispatched before_ms
	dispatched=$(jq -c '.archiveInstanceId = "2026/417" | .correlationId |= ascii_upcase' <<<"$expect_flow")
	before_ms=$(sql "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint")
	produce "$T_DISPATCHED" contract-2 '{"id":1}' -H "$H_FLOW=$dispatched" ||
		fail "kcat produces instance-dispatched"
	wait_messages "$T_DELETED" 1 30 || fail "instance-deleted is produced after instance-dispatched"
	last_record "$T_DELETED" del
	check_eq "instance-deleted: headers without __TypeId__ (null value)" \
		"flyt.instance-flow-headers,origin.application.id,flyt.event-id" "$(header_names "$WORK/del.json")"
	check_eq "instance-deleted: the dispatched record's flow headers, as the original writes them" \
		"$(java_flow "$dispatched" "$id")" "$(jval "$WORK/del.json" 'hdr("flyt.instance-flow-headers")')"
	check_eq "instance-deleted: origin.application.id" "$app" "$(jval "$WORK/del.json" 'hdr("origin.application.id")')"
	jcheck "instance-deleted: null value" "$WORK/del.json" '.payload == null'
	jcheck "instance-deleted: timestamp = when the dispatched record was applied" "$WORK/del.json" \
		'.tstype == "create" and .ts >= $b and .ts <= $n' --argjson b "$before_ms" \
		--argjson n "$(sql "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint")"
	check_eq "instance-dispatched: the instance is deleted" 0 "$(sql "SELECT count(*) FROM flyt.instance WHERE id = $id")"

	produce "$T_DISPATCHED" contract-3 '{"id":1}' -H "$H_FLOW=$dispatched" ||
		fail "kcat produces instance-dispatched again"
	if wait_messages "$T_DELETED" 2 30; then
		pass "instance-dispatched of an instance already gone: instance-deleted is sent all the same"
	else
		fail "instance-dispatched of an instance already gone: instance-deleted is sent all the same"
	fi
	last_record "$T_DELETED" del2
	check_eq "instance-deleted for an instance already gone: the same headers" \
		"$(java_flow "$dispatched" "$id")" "$(jval "$WORK/del2.json" 'hdr("flyt.instance-flow-headers")')"

	# --- instance-deleted by cleanup: the stored headers, unchanged -----------------
	local clean_ms n_del
	n_del=$(jq length "$WORK/$T_DELETED.json")
	out=$(sql "SELECT flyt_cleanup('0 seconds') || ' ' || floor(extract(epoch FROM now()) * 1000)::bigint")
	clean_ms=${out#* }
	wait_messages "$T_DELETED" $((n_del + ${out% *})) 30 || fail "cleanup's instance-deleted are produced"
	jq --argjson id "$id2" '[.[] | select(.key == ($id | tostring))] | .[-1]' "$WORK/$T_DELETED.json" >"$WORK/clean.json"
	check_eq "cleanup: instance-deleted with the stored flow headers (original correlationId)" \
		"$(java_flow "$FIX_HEADERS" "$id2")" "$(jval "$WORK/clean.json" 'hdr("flyt.instance-flow-headers")')"
	check_eq "cleanup: headers without __TypeId__" \
		"flyt.instance-flow-headers,origin.application.id,flyt.event-id" "$(header_names "$WORK/clean.json")"
	check_eq "cleanup: timestamp = the cleanup's time" "$clean_ms" "$(jval "$WORK/clean.json" '.ts')"

	# --- error events, legacy format (the default) ------------------------------------
	produce "$T_RECEIVED" contract-4 '{"valuePerKey": []}' -H "$H_FLOW=$recv_headers" ||
		fail "kcat produces an invalid instance-received"
	wait_messages "$T_REG_ERROR" 1 30 || fail "instance-registration-error is produced"
	last_record "$T_REG_ERROR" regerr
	check_eq "instance-registration-error: headers in the original's order" \
		"flyt.instance-flow-headers,origin.application.id,__TypeId__,flyt.event-id" "$(header_names "$WORK/regerr.json")"
	check_eq "instance-registration-error: the received flow headers, as the original writes them" \
		"$(java_flow "$recv_headers" null)" "$(jval "$WORK/regerr.json" 'hdr("flyt.instance-flow-headers")')"
	check_eq "instance-registration-error: __TypeId__ = ErrorCollection" \
		no.novari.flyt.kafka.model.ErrorCollection "$(jval "$WORK/regerr.json" 'hdr("__TypeId__")')"
	check_eq "instance-registration-error: value = the bare ErrorCollection with args null" \
		"$ERROR_VALUE" "$(jval "$WORK/regerr.json" '.payload')"
	check_eq "instance-registration-error: origin.application.id" "$app" "$(jval "$WORK/regerr.json" 'hdr("origin.application.id")')"

	# --- error events, instance-error format ---------------------------------------------
	sql "ALTER SYSTEM SET flyt_instance.error_event_format = 'instance-error'" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
	# A new session shows the value once the postmaster has reloaded, and
	# the postmaster has signalled the worker before it forks new sessions.
	wait_until 20 sql_is instance-error "SHOW flyt_instance.error_event_format" ||
		fail "error_event_format = instance-error is loaded"
	produce "$T_RECEIVED" contract-5 '{"objectCollectionPerKey": 1}' -H "$H_FLOW=$recv_headers" ||
		fail "kcat produces another invalid instance-received"
	wait_messages "$T_INSTANCE_ERROR" 1 45 || fail "instance-error is produced"
	last_record "$T_INSTANCE_ERROR" insterr
	check_eq "instance-error: __TypeId__ = InstanceErrorEvent" \
		no.novari.flyt.kafka.model.InstanceErrorEvent "$(jval "$WORK/insterr.json" 'hdr("__TypeId__")')"
	jcheck "instance-error: value = {name: REGISTRATION, errors: the ErrorCollection with args null}" "$WORK/insterr.json" \
		'(.payload | fromjson) == {"name": "REGISTRATION", "errors": $e}' --argjson e "$ERROR_VALUE"
	check_eq "instance-error: the received flow headers" \
		"$(java_flow "$recv_headers" null)" "$(jval "$WORK/insterr.json" 'hdr("flyt.instance-flow-headers")')"
	sql "ALTER SYSTEM RESET flyt_instance.error_event_format" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null

	# --- a consumer that reads like fint-flyt-history-service -------------------------------
	local topic records=0
	: >"$WORK/all.jsonl"
	for topic in "$T_REGISTERED" "$T_RETRY" "$T_DELETED" "$T_REG_ERROR" "$T_RETRY_ERROR" "$T_INSTANCE_ERROR"; do
		consume_all "$topic" >>"$WORK/all.jsonl" || true
	done
	records=$(grep -c . "$WORK/all.jsonl" || true)
	python3 "$FLYT_REPO/test/integration/tools/history_consumer.py" "$ORG" <"$WORK/all.jsonl" >"$WORK/history.json" ||
		fail "the history-service-like consumer runs"
	jcheck "history-service-like consumer: skips none of the $records records" "$WORK/history.json" '.skipped == []'
	jcheck "history-service-like consumer: stores an event for every record" "$WORK/history.json" \
		'(.events | length) == $n' --argjson n "$records"
	jcheck "history-service-like consumer: every event from $app" "$WORK/history.json" \
		'[.events[].applicationId] | all(. == $a)' --arg a "$app"
	jcheck "history-service-like consumer: instance-registered stored at the registration's time with its instanceId" \
		"$WORK/history.json" 'any(.events[]; .name == "instance-registered" and .instanceId == $id and .timestamp == $ts)' \
		--argjson id "$id" --argjson ts "$created_ms"
	jcheck "history-service-like consumer: the instance-error event is stored as instance-registration-error" \
		"$WORK/history.json" '[.events[] | select(.name == "instance-registration-error")] | length == 2'
	jcheck "history-service-like consumer: instance-deleted events with the instance id" \
		"$WORK/history.json" 'any(.events[]; .name == "instance-deleted" and .instanceId == $id)' --argjson id "$id"

	# The control: a record without origin.application.id is skipped.
	printf '%s\n' "$(jq -c '.payload | fromjson' "$WORK/reg.json")" |
		timeout 20 kcat -P -b "$BOOTSTRAP" -t "$T_REGISTERED" -H "$H_FLOW=$expect_flow" 2>>"$WORK/kcat.err" ||
		fail "kcat produces a record without origin.application.id"
	consume_all "$T_REGISTERED" | python3 "$FLYT_REPO/test/integration/tools/history_consumer.py" "$ORG" >"$WORK/history2.json"
	jcheck "history-service-like consumer: a record without origin.application.id is skipped (the control)" \
		"$WORK/history2.json" '.skipped | length == 1 and .[0].reason == "no origin.application.id"'
}
