# shellcheck shell=bash
#
# test/integration/lib_flow_headers.sh — flow headers asked of
# fint-flyt-history-service by request-reply (INTEROP.md 2.1–2.3), for
# instances stored without them (as imported from the Java service).
# Sourced by flow_headers.sh (embedded broker) and kafka_flow_headers.sh
# (a real Kafka); source lib.sh first, start the broker, then call
# flow_headers_checks.  The stand-in for history-service is
# tools/flyt_responder.c: it answers from a file, prints every request it
# reads, and leaves unlisted ids unanswered.
#
# Checks:
#   - a retry of an instance without flow headers asks, gets the reply,
#     stores the headers on the instance and queues
#     instance-requested-for-retry with them and a new correlationId; the
#     latency is printed;
#   - the request's wire format: bare JSON number value, null key,
#     kafka_replyTopic, 16-byte kafka_correlationId, origin.application.id,
#     __TypeId__ java.lang.Long, in that order;
#   - a null reply fails the retry at once (55000, "no instance-registered
#     event"), and through the HTTP function with the original's message;
#     no reply fails it after flow_headers_timeout, and no
#     instance-retry-request-error is queued for either (the original sends
#     none before it has headers);
#   - a batch asks for all its ids at once: answered ones are queued, and
#     three unanswered ones cost one timeout, not three;
#   - the cleanup asks for the headers of expired instances without them,
#     deletes an answered one with instance-deleted carrying the replied
#     headers, and one history-service does not know without an event, once
#     the timeout has passed;
#   - with Kafka off a retry fails at once instead of waiting.

FLOW_TIMEOUT_S=3
T_REQUEST=fintlabs-no.flyt.request.instance-flow-headers-for-registered-instance.by.instance-id
T_REPLY=fintlabs-no.flyt.reply.fint-flyt-instance-service.instance-flow-headers-for-registered-instance

# flow_cluster_start — the worker cluster, with a short reply timeout and
# the organisation authorised for the HTTP function.
flow_cluster_start() {
	worker_cluster_start \
		-c "flyt_instance.flow_headers_timeout = '${FLOW_TIMEOUT_S}s'" \
		-c "flyt_instance.authorized_org_id_role_pairs = '{\"fintlabs.no\": [\"USER\"]}'"
}

# headless_instance — registers the fixture and removes its flow headers,
# as an instance imported from the Java service has none; prints its id.
headless_instance() {
	local id
	id=$(register_fixture) || return 1
	sql "UPDATE flyt.instance SET flow_headers = NULL WHERE id = $id" >/dev/null || return 1
	echo "$id"
}

# import_from_java — the Java service's tables in schema legacy
# (test/fixtures/legacy/schema.sql) with two roots, ids 5001 (registered
# now) and 5002 (61 days ago), imported with flyt_import_legacy; sets
# IMPORTED_NEW and IMPORTED_OLD.  Run before anything else is stored.
import_from_java() {
	{
		echo "CREATE SCHEMA legacy; SET search_path = legacy;"
		cat "$FLYT_REPO/test/fixtures/legacy/schema.sql"
		echo "SELECT setval('instance_object_id_seq', 5000);"
		echo "INSERT INTO instance_object (created_at) VALUES (now() AT TIME ZONE 'UTC'), (now() AT TIME ZONE 'UTC' - interval '61 days');"
		echo "INSERT INTO instance_object_value_per_key (instance_object_id, key, value) VALUES (5001, 'tittel', 'Søknad'), (5002, 'tittel', 'Klage');"
	} | timeout 30 psql -X -q -v ON_ERROR_STOP=1 -d postgres -f - >/dev/null 2>"$WORK/legacy.err" ||
		bail "the Java service's tables are created" "$(cat "$WORK/legacy.err")"
	sql "CALL flyt_import_legacy('legacy')" >/dev/null 2>"$WORK/legacy.err" ||
		bail "flyt_import_legacy imports them" "$(cat "$WORK/legacy.err")"
	check_eq "two instances imported from the Java service, without flow headers" "5001,5002" \
		"$(sql "SELECT string_agg(id::text, ',' ORDER BY id) FROM flyt.instance WHERE flow_headers IS NULL")"
	IMPORTED_NEW=5001
	IMPORTED_OLD=5002
}

# history_headers ID — the InstanceFlowHeaders history-service would answer
# for instance ID (its instance-registered headers, another correlationId).
history_headers() {
	jq -c --argjson id "$1" '.instanceId = $id | .correlationId = "0b5a4f5e-7d1c-4e59-9a86-3c8f2d6e1a40"' <<<"$FIX_HEADERS"
}

# millis — the wall clock in milliseconds.
millis() {
	date +%s%3N
}

responder_start() {
	"${CC:-cc}" -O2 -Wall -o "$WORK/flyt_responder" "$FLYT_REPO/test/integration/tools/flyt_responder.c" -lrdkafka ||
		bail "the history-service stand-in builds"
	: >"$WORK/answers.tsv"
	"$WORK/flyt_responder" -b "$BOOTSTRAP" -t "$T_REQUEST" -f "$WORK/answers.tsv" \
		>"$WORK/requests.jsonl" 2>"$WORK/responder.err" &
	RESPONDER_PID=$!
	IT_PIDS+=("$RESPONDER_PID")
	wait_until 60 grep -q 'assigned [1-9]' "$WORK/responder.err" ||
		bail "the history-service stand-in joins its group" "$(tail -n 5 "$WORK/responder.err")"
	pass "the history-service stand-in answers on $T_REQUEST"
}

responder_stop() {
	if [ -n "${RESPONDER_PID:-}" ]; then
		kill -TERM "$RESPONDER_PID" 2>/dev/null || true
		wait "$RESPONDER_PID" 2>/dev/null || true
		RESPONDER_PID=
	fi
}

# answer ID JSON|null — tell the stand-in what to answer for ID.
answer() {
	printf '%s\t%s\n' "$1" "$2" >>"$WORK/answers.tsv"
}

flow_headers_checks() {
	local id1 id2 id3 t0 t1 corr out n_retry

	import_from_java
	responder_start

	# --- a retry of an imported instance asks, and proceeds with the reply -------
	id1=$IMPORTED_NEW
	answer "$id1" "$(history_headers "$id1")"
	t0=$(millis)
	corr=$(sql "SELECT flyt_retry($id1)") || fail "flyt_retry of an instance without flow headers succeeds with the reply"
	t1=$(millis)
	note "retry of an imported instance, answered by the stand-in (the first: topic metadata too): $((t1 - t0)) ms"
	check_eq "the replied headers are stored on the instance (with its id)" \
		"$(jq -c -S . <<<"$(history_headers "$id1")")" \
		"$(sql "SELECT flow_headers FROM flyt.instance WHERE id = $id1" | jq -c -S .)"
	wait_messages "$T_RETRY" 1 30 || fail "instance-requested-for-retry is produced"
	jq --arg c "$corr" '[.[] | select(.headers as $h | [range(1; ($h | length); 2) | $h[.]] | any(contains($c)))] | .[-1]' \
		"$WORK/$T_RETRY.json" >"$WORK/retry1.json"
	jcheck "instance-requested-for-retry: the replied headers with the retry's new correlationId" "$WORK/retry1.json" \
		'flow == ($h | .correlationId = $c)' --argjson h "$(history_headers "$id1")" --arg c "$corr"

	# The latency of such a retry, once the topics' metadata is known.
	local lat=() i idl
	for i in 1 2 3 4 5; do
		idl=$(headless_instance) || bail "an instance without flow headers"
		answer "$idl" "$(history_headers "$idl")"
		t0=$(millis)
		sql "SELECT flyt_retry($idl)" >/dev/null || fail "flyt_retry of instance $idl with the reply"
		t1=$(millis)
		lat+=($((t1 - t0)))
	done
	note "retry latency of instances without flow headers, 5 in a row: ${lat[*]} ms (median $(printf '%s\n' "${lat[@]}" | sort -n | sed -n 3p) ms)"

	# --- the request on the wire --------------------------------------------------
	jq -s --arg id "$id1" '[.[] | select(.value == $id)] | .[0]' "$WORK/requests.jsonl" >"$WORK/request.json"
	jcheck "request: value = the instance id as a bare JSON number" "$WORK/request.json" '.value == $id' --arg id "$id1"
	jcheck "request: null key" "$WORK/request.json" '.key == null'
	jcheck "request: kafka_replyTopic = the reply topic" "$WORK/request.json" '.replyTopic == $t' --arg t "$T_REPLY"
	jcheck "request: kafka_correlationId = 16 raw bytes (a version 4 UUID)" "$WORK/request.json" \
		'.correlationIdBytes == 16 and (.correlationIdHex | test("^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$"))'
	jcheck "request: origin.application.id = fint-flyt-instance-service" "$WORK/request.json" '.origin == "fint-flyt-instance-service"'
	jcheck "request: __TypeId__ = java.lang.Long" "$WORK/request.json" '.typeId == "java.lang.Long"'
	jcheck "request: headers in the original's order" "$WORK/request.json" \
		'.headers == ["kafka_replyTopic", "kafka_correlationId", "origin.application.id", "__TypeId__"]'

	# --- a null reply, and none at all ----------------------------------------------
	id2=$(headless_instance) || bail "an instance without flow headers"
	answer "$id2" null
	t0=$(millis)
	out=$(sql "SELECT flyt_retry($id2)" 2>&1) && fail "a null reply fails the retry" "$out"
	t1=$(millis)
	if grep -q "has no instance-registered event of it" <<<"$out" && [ $((t1 - t0)) -lt $((FLOW_TIMEOUT_S * 1000)) ]; then
		pass "a null reply fails the retry at once ($((t1 - t0)) ms): history-service has none"
	else
		fail "a null reply fails the retry at once: history-service has none" "$out" "$((t1 - t0)) ms"
	fi
	out=$(sql "SET request.jwt.claims = '{\"organizationid\": \"fintlabs.no\", \"objectidentifier\": \"0e8c1c1e-8f4a-4f8e-9c59-2b3f5b8a7c11\", \"roles\": [\"https://role-catalog.vigoiks.no/vigo/flyt/user\"]}'; SELECT flyt_api.retry($id2)" 2>&1) || true
	if grep -q "could not find instance flow headers for registered instance with id=$id2" <<<"$out"; then
		pass "flyt_api.retry: the original's 500 message for a null reply"
	else
		fail "flyt_api.retry: the original's 500 message for a null reply" "$out"
	fi

	id3=$(headless_instance) || bail "an instance without flow headers"
	t0=$(millis)
	out=$(sql "SELECT flyt_retry($id3)" 2>&1) && fail "no reply fails the retry" "$out"
	t1=$(millis)
	if grep -q "did not answer within flyt_instance.flow_headers_timeout" <<<"$out" &&
		[ $((t1 - t0)) -ge $((FLOW_TIMEOUT_S * 1000)) ] && [ $((t1 - t0)) -lt $((FLOW_TIMEOUT_S * 1000 + 2000)) ]; then
		pass "no reply fails the retry after flow_headers_timeout ($((t1 - t0)) ms)"
	else
		fail "no reply fails the retry after flow_headers_timeout" "$out" "$((t1 - t0)) ms"
	fi
	check_eq "no instance-retry-request-error when there are no headers (the original sends none)" "0 0" \
		"$(sql "SELECT count(*) FROM flyt.outbox WHERE event_name IN ('instance-retry-request-error', 'instance-error')") $(topic_count "$T_RETRY_ERROR")"

	# --- a backend terminated while it waits frees its slot ------------------------
	local idk pid
	idk=$(headless_instance) || bail "an instance without flow headers"
	sql "SELECT flyt_retry($idk)" >/dev/null 2>&1 &
	pid=$!
	IT_PIDS+=("$pid")
	if wait_until 10 sql_is 1 "SELECT (flyt_status()->'flow_headers'->>'waiting')::int"; then
		sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT flyt_retry($idk)%'" >/dev/null
		wait "$pid" 2>/dev/null || true
		if wait_until 2 sql_is 0 "SELECT (flyt_status()->'flow_headers'->>'waiting')::int"; then
			pass "a backend terminated while it waits for a reply frees its request slot at once"
		else
			fail "a backend terminated while it waits for a reply frees its request slot at once" "$(show_status)"
		fi
	else
		fail "a waiting retry holds one request slot" "$(show_status)"
	fi

	# --- a batch asks for everything at once ---------------------------------------------
	local b1 b2 b3 u1 u2 u3
	b1=$(headless_instance) && b2=$(headless_instance) && b3=$(headless_instance) || bail "instances without flow headers"
	answer "$b1" "$(history_headers "$b1")"
	answer "$b2" "$(history_headers "$b2")"
	answer "$b3" "$(history_headers "$b3")"
	u1=$(headless_instance) && u2=$(headless_instance) && u3=$(headless_instance) || bail "instances without flow headers"
	t0=$(millis)
	out=$(sql "SELECT string_agg(status, ',' ORDER BY instance_id) FROM flyt_retry_batch(ARRAY[$b1, $u1, $b2, $u2, $b3, $u3]::bigint[])")
	t1=$(millis)
	check_eq "batch: answered ids are queued, unanswered ones have no flow headers" \
		"queued,queued,queued,no_flow_headers,no_flow_headers,no_flow_headers" "$out"
	if [ $((t1 - t0)) -lt $((FLOW_TIMEOUT_S * 1000 * 2)) ]; then
		pass "batch: three unanswered ids cost one timeout, not three ($((t1 - t0)) ms)"
	else
		fail "batch: three unanswered ids cost one timeout, not three" "$((t1 - t0)) ms"
	fi

	# --- the cleanup asks, then deletes ------------------------------------------------------
	local c1 c2 n_deleted deleted
	sql "DELETE FROM flyt.instance WHERE id <> $IMPORTED_OLD" >/dev/null
	c1=$IMPORTED_OLD
	c2=$(headless_instance) || bail "an instance without flow headers"
	answer "$c1" "$(history_headers "$c1")"
	answer "$c2" null
	sql "UPDATE flyt.instance SET created_at = now() - interval '61 days'" >/dev/null
	snapshot "$T_DELETED"
	n_deleted=$(jq length "$WORK/$T_DELETED.json")
	check_eq "cleanup: expired instances whose headers it asks for (one imported) are held back" 0 "$(sql "SELECT flyt_cleanup()")"
	if wait_until 20 sql_is t "SELECT flow_headers IS NOT NULL FROM flyt.instance WHERE id = $c1"; then
		pass "cleanup: the reply is stored on the instance"
	else
		fail "cleanup: the reply is stored on the instance"
	fi
	check_eq "cleanup: the answered one goes at once" 1 "$(sql "SELECT flyt_cleanup()")"
	wait_until $((FLOW_TIMEOUT_S + 2)) sql_is 1 \
		"SELECT count(*) FROM flyt.flow_headers_request WHERE requested_at < now() - interval '${FLOW_TIMEOUT_S}s'" ||
		true
	deleted=$(sql "SELECT flyt_cleanup()")
	check_eq "cleanup: the one history-service does not know goes after the timeout" \
		"1 0" "$deleted $(sql "SELECT count(*) FROM flyt.instance")"
	if wait_messages "$T_DELETED" $((n_deleted + 1)) 30; then
		jq --arg id "$c1" '[.[] | select(.key == $id)] | .[-1]' "$WORK/$T_DELETED.json" >"$WORK/cdel.json"
		jcheck "cleanup: instance-deleted of the imported instance carries the replied headers, unchanged" "$WORK/cdel.json" \
			'flow == $h' --argjson h "$(history_headers "$c1")"
	else
		fail "cleanup: instance-deleted is produced for the answered instance"
	fi
	check_eq "cleanup: no instance-deleted for the unknown one" 0 \
		"$(jq --arg id "$c2" '[.[] | select(.key == $id)] | length' "$WORK/$T_DELETED.json")"

	responder_stop
}
