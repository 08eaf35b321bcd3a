#!/usr/bin/env bash
#
# flow_headers.sh — flow headers asked of fint-flyt-history-service by
# request-reply (lib_flow_headers.sh) against the embedded broker;
# kafka_flow_headers.sh runs the same checks against a real Apache Kafka.
#
# Own broker, cluster and stand-in; all always stopped.  Prints ok/not ok
# lines and "N passed, M failed"; exit status non-zero on any failure.
set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=test/integration/lib_flow_headers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib_flow_headers.sh"

it_setup 300
broker_start
flow_cluster_start
require_worker
expect_status_up 60
flow_headers_checks

# With Kafka off nobody can be asked: a retry fails at once.
sql "ALTER SYSTEM SET flyt_instance.kafka_bootstrap_servers = ''" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
wait_until 30 sql_is kafka_off "SELECT flyt_status()->'worker'->>'state'" ||
	fail "the worker turns Kafka off" "flyt_status(): $(show_status)" \
		"the worker: $(sql_quiet "SELECT coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-') || ' ' || state || ' ' || left(query, 80) FROM pg_stat_activity WHERE backend_type LIKE 'flyt%'")"
id=$(headless_instance)
t0=$(millis)
out=$(sql "SELECT flyt_retry($id)" 2>&1) || true
t1=$(millis)
if grep -q "could not be asked of fint-flyt-history-service" <<<"$out" && [ $((t1 - t0)) -lt 1000 ]; then
	pass "Kafka off: a retry without flow headers fails at once ($((t1 - t0)) ms)"
else
	fail "Kafka off: a retry without flow headers fails at once" "$out" "$((t1 - t0)) ms"
fi
finish
