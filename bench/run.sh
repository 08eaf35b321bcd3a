#!/usr/bin/env bash
#
# bench/run.sh — the SPEC §9 benchmark (what `make bench` runs).  Not part of
# `make test` or CI.
#
# Sets up its own cluster (extension preloaded, fsync, full_page_writes and
# synchronous_commit on, shared_buffers 256MB) and the embedded broker
# (broker/flyt_broker), runs every workload and its floor in this one run on
# the same data, and prints one line per figure on stdout:
#
#   name value unit floor ratio        (floor and ratio "-" where there is none)
#
# Progress and details go to stderr as "# ..." lines.  Sizes (environment):
#
#   FLYT_BENCH_INGEST=10000        instance-received messages ingested by the
#                                  running worker (figure ingest)
#   FLYT_BENCH_INGEST_COLD=3000    messages waiting before CREATE EXTENSION
#                                  (ingest_cold; <= ~3300: the broker's cap)
#   FLYT_BENCH_INGEST_CHUNK=1500   produce chunk of `ingest`
#                                  COLD + INGEST instances are the id range of
#                                  the retry workloads and the small `scale`
#   FLYT_BENCH_RETRY_SECS=15       duration of each retry pgbench run
#   FLYT_BENCH_LAT_RATE=50         retry latency: transactions/s ...
#   FLYT_BENCH_LAT_SECS=20         ... for this long
#   FLYT_BENCH_PUMP=100000         messages queued, then drained (pump)
#   FLYT_BENCH_CLEANUP=1000000     expired instances (also what `scale` adds)
#   FLYT_BENCH_CLEANUP_BATCH=10000 instances per cleanup transaction (the
#                                  worker's flyt_instance.cleanup_batch_size)
#   FLYT_BENCH_CLEANUP_RATE=50     concurrent flyt_retry/s during cleanup
#   FLYT_BENCH_SCALE_SECS=15       duration of each scale pgbench run
#   FLYT_BENCH_TIME_LIMIT=900      hard limit of the whole run (s)
#   FLYT_BENCH_OUT=FILE            also append the figure lines to FILE
#   FLYT_BENCH_CONF='a = 1;b = 2'  extra postgresql.conf lines (experiments,
#                                  e.g. flyt_instance.max_in_flight = 10000)
#   FLYT_BENCH_KAFKA=1             also ingest_kafka and pump_kafka against a
#                                  real Apache Kafka (script/kafka.sh); 0: not
#   FLYT_BENCH_KAFKA_CONFIG=       librdkafka properties added to the worker's
#                                  kafka_config for those two (experiments,
#                                  e.g. linger.ms=5)
#   FLYT_BENCH_PERF=DIR            record `perf record -a -g` of ingest,
#                                  retry_1c, retry_8c, pump and cleanup (ours) into
#                                  DIR/<figure>.data (distorts the figures a bit)
#
# What each figure measures is described where it is measured below and in
# bench/RESULTS.md.
#
# Functions called through lc_wait look unreachable to shellcheck.
# shellcheck disable=SC2317,SC2119,SC2016
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The server's own client programs first: Debian's psql is a Perl wrapper
# that costs more CPU per call than most of what a call measures.
PATH=$("${PG_CONFIG:-pg_config}" --bindir):$PATH
# shellcheck source=test/integration/lib_crash.sh
. "$HERE/../test/integration/lib_crash.sh"

INGEST=${FLYT_BENCH_INGEST:-10000}
RETRY_SECS=${FLYT_BENCH_RETRY_SECS:-15}
LAT_RATE=${FLYT_BENCH_LAT_RATE:-50}
LAT_SECS=${FLYT_BENCH_LAT_SECS:-20}
PUMP=${FLYT_BENCH_PUMP:-100000}
CLEANUP=${FLYT_BENCH_CLEANUP:-1000000}
CLEANUP_BATCH=${FLYT_BENCH_CLEANUP_BATCH:-10000}
CLEANUP_RATE=${FLYT_BENCH_CLEANUP_RATE:-50}
SCALE_SECS=${FLYT_BENCH_SCALE_SECS:-15}
OUT=${FLYT_BENCH_OUT:-}
T_RETRY=$LC_PREFIX.instance-requested-for-retry

say() { printf '# %s\n' "$*" >&2; }
die() {
	say "FAILED: $*"
	cluster_log_tail 40 || true
	exit 1
}

# fig NAME VALUE UNIT [FLOOR] [RATIO]
fig() {
	local line
	line=$(printf '%s %s %s %s %s' "$1" "$2" "$3" "${4:--}" "${5:--}")
	printf '%s\n' "$line"
	if [ -n "$OUT" ]; then printf '%s\n' "$line" >>"$OUT"; fi
}

now() { date +%s.%N; }

PERF=${FLYT_BENCH_PERF:-}
PERF_PID=
perf_begin() { # NAME
	[ -n "$PERF" ] || return 0
	mkdir -p "$PERF"
	(
		# without the test producer's pipes: it must see the end of its input
		if [ -n "${FEED_FD:-}" ]; then exec {FEED_FD}>&-; fi
		if [ -n "${FEED_ACK:-}" ]; then exec {FEED_ACK}<&-; fi
		exec perf record -a -g -F 499 -o "$PERF/$1.data"
	) >/dev/null 2>&1 &
	PERF_PID=$!
	LC_BG_PIDS+=("$PERF_PID")
	sleep 0.5
}
perf_end() {
	[ -n "$PERF_PID" ] || return 0
	kill -INT "$PERF_PID" 2>/dev/null || true
	wait "$PERF_PID" 2>/dev/null || true
	PERF_PID=
}
# cpu_seconds PID — user + system CPU time of a process so far.
cpu_seconds() {
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / hz }' "/proc/$1/stat"
}
# calc EXPR — floating point arithmetic, 4 significant decimals.
calc() {
	python3 -c "
import sys
v = eval(sys.argv[1])
print(v if isinstance(v, int) else ('%d' % round(v)) if abs(v) >= 1000 else ('%.4g' % v))" "$1"
}

# sql SQL — statements (each in its own transaction) in database postgres.
sql() {
	printf '%s\n' "$1" | timeout "${LC_SQL_TIMEOUT:-600}" psql -X -qAt -v ON_ERROR_STOP=1 -d postgres -f - ||
		die "sql: $1"
}
outbox_empty() { lc_sql_true 'SELECT NOT EXISTS (SELECT FROM flyt.outbox)'; }
drain() { lc_wait "${1:-300}" outbox_empty || die "outbox not drained: $(lc_sql 'SELECT count(*) FROM flyt.outbox')"; }

# A producer that stays up for a whole figure, fed files through a FIFO.
# Before the clock starts it has delivered to the topic already (feed_sync
# waits for that): with a fresh flyt_produce per chunk, one chunk in a few
# reached the broker only 0.2-1 s after it was produced (an independent
# kcat consumer saw it then; 10-50 ms otherwise) while the worker, done
# with the chunks before, slept, and the ingest figures measured that.
# feed_open BROKERS — starts it (FEED_FD is its input, FEED_ACK its output).
feed_open() {
	rm -f "$LC_WORK/feed.in" "$LC_WORK/feed.out"
	mkfifo "$LC_WORK/feed.in" "$LC_WORK/feed.out"
	timeout "$(lc_budget 900)" "$LC_WORK/flyt_produce" -b "$1" -t "$LC_T_RECEIVED" \
		<"$LC_WORK/feed.in" >"$LC_WORK/feed.out" 2>>"$LC_WORK/producer.log" &
	FEED_PID=$!
	LC_BG_PIDS+=("$FEED_PID")
	exec {FEED_FD}>"$LC_WORK/feed.in" {FEED_ACK}<"$LC_WORK/feed.out"
}
# feed FILE — hands FILE's lines to the producer (returns once it read them).
feed() { cat "$1" >&"$FEED_FD"; }
# feed_sync — returns once everything fed so far is acknowledged by the broker.
feed_sync() {
	local ack=
	printf '\n' >&"$FEED_FD"
	read -r -t "$(lc_budget 300)" ack <&"$FEED_ACK" || true
	case $ack in synced\ *) ;; *) die "producer: no checkpoint: $(tail -3 "$LC_WORK/producer.log")" ;; esac
}
# feed_close — end of input: the producer flushes and exits 0 when every
# message was acknowledged.
feed_close() {
	exec {FEED_FD}>&-
	wait "$FEED_PID" || die "producer: $(tail -3 "$LC_WORK/producer.log")"
	exec {FEED_ACK}<&-
}

# bench_wait LIMIT CONDITION — waits until the SQL condition is true.  One
# session checks it every 5 ms (bench.wait_until), committing between
# checks so that it holds back no vacuum horizon; a psql process per check
# would take CPU from what is measured and see the end only every 200 ms.
bench_wait() {
	timeout $(($1 + 30)) psql -X -qAt -v ON_ERROR_STOP=1 -d postgres \
		-c "CALL bench.wait_until(\$cond\$$2\$cond\$, $1)" >/dev/null 2>"$LC_WORK/wait.err"
}
# Messages of instance-received applied (stored or dead-lettered): the
# consumer's offsets, written in the transaction that applied them.
received_applied() { echo "(SELECT coalesce(sum(next_offset), 0) FROM flyt.consumer_offset WHERE topic = '$LC_T_RECEIVED') >= $1"; }
OUTBOX_EMPTY='NOT EXISTS (SELECT FROM flyt.outbox ORDER BY id LIMIT 1)'

# private_kb PID — RssAnon + RssFile (VmRSS without the shared buffers).
private_kb() {
	awk '$1 == "RssAnon:" || $1 == "RssFile:" { s += $2 } END { print s }' "/proc/$1/status"
}
metric() {
	lc_sql "SELECT flyt_metrics()" | awk -v n="$1" '$1 == n { print $2 }'
}

# pgbench_run OUTFILE ARGS... — pgbench against database postgres.
pgbench_run() {
	local out=$1
	shift
	(cd "$LC_WORK" && timeout "$(lc_budget 900)" pgbench -n -M prepared "$@" postgres) >"$out" 2>&1 ||
		die "pgbench $*: $(tail -5 "$out")"
}
tps_of() { awk '/^tps = / { print $3 }' "$1"; }
lat_of() { awk '/^latency average = / { print $4 }' "$1"; }

kafka_off() {
	sql "ALTER SYSTEM SET flyt_instance.kafka_bootstrap_servers = ''" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
	lc_wait 30 lc_state_in kafka_off || {
		say "the worker did not turn Kafka off in 30 s; what it is doing:"
		lc_sql "SELECT flyt_status()->'worker'" >&2
		lc_sql "SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS xact, left(query, 100)
		        FROM pg_stat_activity WHERE backend_type LIKE 'flyt_instance%' OR state <> 'idle'" >&2
		if command -v gdb >/dev/null; then
			timeout 30 gdb -p "$(lc_worker_pid)" -batch -ex 'thread apply all bt 20' 2>/dev/null | grep -E '^(#|Thread)' >&2 || true
		fi
		die "worker state kafka_off (is '$(lc_state)')"
	}
}
kafka_on() {
	sql "ALTER SYSTEM RESET flyt_instance.kafka_bootstrap_servers" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
}

# gen_messages FILE PREFIX N — N instance-received lines for flyt_produce,
# each value about 1 KB (like test/fixtures, with more fields).
gen_messages() {
	python3 - "$1" "$2" "$3" <<'EOF'
import json, sys, uuid
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "w") as f:
    for i in range(n):
        sai = f"{prefix}-{i:07d}"
        headers = {"sourceApplicationId": 2, "correlationId": str(uuid.uuid4()),
                   "sourceApplicationIntegrationId": "sak", "sourceApplicationInstanceId": sai,
                   "fileIds": [str(uuid.uuid4())], "integrationId": 17, "instanceId": None,
                   "configurationId": None, "archiveInstanceId": None}
        value = {"valuePerKey": {"tittel": f"Søknad om skoleskyss {sai}", "saksansvarlig": "ola.nordmann",
                                 "dato": "2026-11-20", "skole": "Storgata skole", "klassetrinn": "5",
                                 "avstand": "4.2 km", "begrunnelse": "Trafikkfarlig skolevei langs fylkesvei 120 uten fortau",
                                 "arkivdel": "Elevmapper", "tilgangskode": "13", "hjemmel": "Offl. § 13 jf. fvl. § 13",
                                 "referanse": f"REF-{i:08d}", "journalstatus": "J", "dokumenttype": "I"},
                 "objectCollectionPerKey": {
                     "parter": [{"valuePerKey": {"navn": "Kari Nordmann", "rolle": "søker", "fodselsdato": "2016-04-01"},
                                 "objectCollectionPerKey": {}},
                                {"valuePerKey": {"navn": "Per Hansen", "rolle": "foresatt", "telefon": "+47 912 34 567",
                                                 "epost": "per.hansen@example.no"},
                                 "objectCollectionPerKey": {"adresser": [{"valuePerKey": {"gate": "Storgata 1",
                                     "postnummer": "0155", "poststed": "Oslo"}, "objectCollectionPerKey": {}}]}}],
                     "dokumenter": [{"valuePerKey": {"tittel": "Søknadsskjema", "format": "application/pdf",
                                                     "fil": str(uuid.uuid4())}, "objectCollectionPerKey": {}}]}}
        f.write(sai + "\t" + json.dumps(headers, separators=(",", ":"), ensure_ascii=False) + "\t"
                + json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n")
EOF
}

# ---------------------------------------------------------------------------
say "sizes: ingest=$INGEST pump=$PUMP cleanup=$CLEANUP retry=${RETRY_SECS}s latency=${LAT_RATE}/s*${LAT_SECS}s scale=${SCALE_SECS}s"
T0=$SECONDS
# The embedded broker (librdkafka's mock cluster) holds a fetch that found
# nothing for the consumer's whole fetch.wait.max.ms (librdkafka's 500 ms)
# even when messages arrive meanwhile; a Kafka broker answers as soon as
# they do.  With the default the worker waited idle for two thirds of the
# ingest (pg_stat_activity, worker CPU 0.94 s of 1.92 s), so the figure
# measured the mock's long poll: the worker's consumer asks it every 10 ms
# here.  Against Apache Kafka the default is kept (see ingest_kafka).
lc_init "${FLYT_BENCH_TIME_LIMIT:-900}"
command -v pgbench >/dev/null || die "pgbench is not installed (postgresql-client-15)"
lc_broker_start
lc_cluster_create_worker \
	-c "fsync = on" -c "full_page_writes = on" -c "synchronous_commit = on" \
	-c "shared_buffers = 256MB" -c "max_connections = 50" \
	-c "max_wal_size = 4GB" -c "checkpoint_timeout = 15min" \
	-c "flyt_instance.cleanup_initial_delay = '24h'" \
	-c "flyt_instance.kafka_config = '$LC_KAFKA_CONFIG;fetch.wait.max.ms=10'" \
	-c "log_min_messages = warning" \
	-c "$(printf '%s' "${FLYT_BENCH_CONF:-}" | tr ';' '\n')" >/dev/null || die "cluster_create"
without_broker_fds() { eval "\"\$@\" $LC_BROKER_IN>&- $LC_BROKER_OUT<&-"; }
without_broker_fds cluster_start >/dev/null || die "cluster_start"
cluster_env
export PGCONNECT_TIMEOUT=10
lc_build_producer
say "broker $LC_BROKER_ADDR, cluster $CLUSTER_DIR ($(sql 'SHOW server_version'))"
sql "CREATE SCHEMA bench;
CREATE PROCEDURE bench.wait_until(cond text, limit_s float8) LANGUAGE plpgsql AS \$\$
DECLARE
	ok boolean;
	deadline timestamptz := clock_timestamp() + make_interval(secs => limit_s);
BEGIN
	LOOP
		EXECUTE 'SELECT ' || cond INTO ok;
		EXIT WHEN ok;
		IF clock_timestamp() > deadline THEN
			RAISE EXCEPTION 'timed out after % s waiting for %', limit_s, cond;
		END IF;
		COMMIT;
		PERFORM pg_sleep(0.005);
		COMMIT;
	END LOOP;
END \$\$" >/dev/null

# --- ingest ------------------------------------------------------------------
# The embedded broker (librdkafka's mock cluster) keeps at most 5 MB per
# partition and drops the oldest segments beyond that, so no more than ~3300
# of these ~1.4 KB messages may wait on the topic at once.  Two figures:
#  ingest_cold: COLD (default 3000) messages produced before the extension
#    exists; the clock runs from CREATE EXTENSION (the worker notices it
#    within a second, connects, joins the group, consumes, registers, queues
#    instance-registered) until flyt.instance holds them all.  Mostly start-up.
#  ingest: INGEST messages through the running worker, produced in chunks of
#    CHUNK (at most two chunks waiting, so nothing is dropped and the worker
#    never waits for the producer); from the first produce until stored.
#    One producer delivers the cold messages and then these (feed_open).
COLD=${FLYT_BENCH_INGEST_COLD:-3000}
CHUNK=${FLYT_BENCH_INGEST_CHUNK:-1500}
gen_messages "$LC_WORK/cold.tsv" cold "$COLD"
gen_messages "$LC_WORK/ingest.tsv" bench "$INGEST"
say "value bytes: $(awk -F'\t' '{ s += length($3) } END { printf "%d", s / NR }' "$LC_WORK/ingest.tsv") (avg)"
feed_open "$LC_BROKER_ADDR"
feed "$LC_WORK/cold.tsv"
feed_sync
t0=$(now)
sql "CREATE EXTENSION flyt_instance" >/dev/null
lc_wait 120 lc_count_at_least "$COLD" ||
	die "ingest of $COLD messages: $(lc_sql 'SELECT count(*) FROM flyt.instance') stored; $(lc_sql 'SELECT flyt_status()')"
t1=$(now)
cold_rate=$(calc "$COLD / ($t1 - $t0)")
say "ingest_cold: $COLD in $(calc "$t1 - $t0") s from CREATE EXTENSION"
drain 120
split -l "$CHUNK" -d -a 4 "$LC_WORK/ingest.tsv" "$LC_WORK/chunk."
wpid=$(lc_worker_pid)
[ -n "$wpid" ] || die "worker pid"
cpu0=$(cpu_seconds "$wpid")
perf_begin ingest
t0=$(now)
k=0
for f in "$LC_WORK"/chunk.*; do
	if [ "$k" -ge 1 ]; then # the chunk before the last one produced is stored
		bench_wait 300 "$(received_applied $((COLD + (k - 1) * CHUNK)))" || die "ingest: chunk $k: $(cat "$LC_WORK/wait.err")"
	fi
	feed "$f" || die "produce $f"
	k=$((k + 1))
done
bench_wait 300 "$(received_applied $((COLD + INGEST)))" ||
	die "ingest: $(lc_sql 'SELECT count(*) FROM flyt.instance') stored: $(cat "$LC_WORK/wait.err")"
t1=$(now)
feed_close
[ "$(sql 'SELECT count(*) FROM flyt.instance')" -ge $((COLD + INGEST)) ] ||
	die "ingest: $(lc_sql 'SELECT count(*) FROM flyt.instance') stored, $(lc_sql 'SELECT count(*) FROM flyt.dead_letter') dead letters"
perf_end
ingest_rate=$(calc "$INGEST / ($t1 - $t0)")
say "ingest: $INGEST in $(calc "$t1 - $t0") s; the worker was on a CPU for $(calc "$(cpu_seconds "$wpid") - $cpu0") s of it"

# The floor: one connection, multi-row INSERTs (500 rows each, one
# transaction each) of the same payloads into a copy of flyt.instance.
sql "CREATE TABLE bench.ingest_copy (LIKE flyt.instance INCLUDING ALL)" >/dev/null
python3 - "$LC_WORK/ingest.tsv" "$LC_WORK/ingest_floor.sql" <<'EOF'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
q = lambda s: "'" + s.replace("'", "''") + "'"
rows = []
with open(src) as f:
    for line in f:
        sai, h, v = line.rstrip("\n").split("\t")
        hd = json.loads(h)
        rows.append("(%s::jsonb, %s::jsonb, %d, %s, %s, %d)" % (q(v), q(h), hd["sourceApplicationId"],
                    q(hd["sourceApplicationIntegrationId"]), q(sai), hd["integrationId"]))
with open(dst, "w") as f:
    for i in range(0, len(rows), 500):
        f.write("INSERT INTO bench.ingest_copy (payload, flow_headers, source_application_id, "
                "source_application_integration_id, source_application_instance_id, integration_id) VALUES\n")
        f.write(",\n".join(rows[i:i + 500]) + ";\n")
EOF
# On a quiet system, as ours started: the instance-registered events of the
# ingest are sent first (the floor used to run while the worker sent them).
# The median of three runs (TRUNCATE between): one run swung by 1.8x from
# one bench run to the next (whether the WAL segments it needs exist yet).
drain 300
floors=()
for k in 1 2 3; do
	sql "TRUNCATE bench.ingest_copy" >/dev/null
	t0=$(now)
	timeout 600 psql -X -q -v ON_ERROR_STOP=1 -d postgres -f "$LC_WORK/ingest_floor.sql" >/dev/null || die "ingest floor"
	t1=$(now)
	floors+=("$(calc "$INGEST / ($t1 - $t0)")")
done
ingest_floor=$(printf '%s\n' "${floors[@]}" | sort -g | sed -n 2p)
say "ingest floor runs: ${floors[*]} rows/s"
fig ingest "$ingest_rate" msgs/s "$ingest_floor" "$(calc "$ingest_rate / $ingest_floor")"
fig ingest_cold "$cold_rate" msgs/s "$ingest_floor" "$(calc "$cold_rate / $ingest_floor")"
wpid=$(lc_worker_pid)
[ -n "$wpid" ] || die "worker pid"

# --- retry throughput -----------------------------------------------------------
# Random ids among the N ingested instances.  Ours: SELECT flyt_retry(:id)
# (the worker runs and drains the outbox meanwhile).  Floor: one statement
# that reads the row and inserts one outbox row into a copy of flyt.outbox.
read -r lo hi <<<"$(sql "SELECT min(id) || ' ' || max(id) FROM flyt.instance" | tr '|' ' ')"
sql "CREATE TABLE bench.instance_copy (LIKE flyt.instance INCLUDING ALL);
     INSERT INTO bench.instance_copy OVERRIDING SYSTEM VALUE SELECT * FROM flyt.instance;
     CREATE TABLE bench.outbox_copy (LIKE flyt.outbox INCLUDING ALL);
     VACUUM ANALYZE bench.instance_copy; VACUUM ANALYZE flyt.instance" >/dev/null
cat >"$LC_WORK/retry.sql" <<EOF
\set id random($lo, $hi)
SELECT flyt_retry(:id);
EOF
floor_insert="INSERT INTO bench.outbox_copy (event_name, topic, key, headers, value)
SELECT 'instance-requested-for-retry', '$T_RETRY', i.id::text,
       jsonb_build_object('flyt.instance-flow-headers', i.flow_headers::text, 'flyt.event-id', '0'),
       jsonb_build_object('id', i.id::text, 'valuePerKey', i.payload->'valuePerKey',
                          'objectCollectionPerKey', i.payload->'objectCollectionPerKey',
                          'createdAt', i.created_at)::text"
cat >"$LC_WORK/retry_floor.sql" <<EOF
\set id random($lo, $hi)
$floor_insert
FROM bench.instance_copy i WHERE i.id = :id FOR KEY SHARE;
EOF
# The same floor with the history row SPEC section 2 asks of every retry
# (RETRY_REQUESTED with the next version, in the same statement), into a
# copy of flyt.instance_event: what any implementation of that data model
# must at least do, printed beside each figure (not a figure itself).
sql "CREATE TABLE bench.event_copy (LIKE flyt.instance_event INCLUDING ALL);
     INSERT INTO bench.event_copy SELECT * FROM flyt.instance_event;
     VACUUM ANALYZE bench.event_copy" >/dev/null
cat >"$LC_WORK/retry_history.sql" <<EOF
\set id random($lo, $hi)
WITH i AS (SELECT id, payload, flow_headers, created_at FROM bench.instance_copy WHERE id = :id FOR KEY SHARE),
h AS (INSERT INTO bench.event_copy (instance_id, version, event_type, requested_by, correlation_id)
      SELECT :id, COALESCE(max(e.version), 0) + 1, 'RETRY_REQUESTED', 'bench', gen_random_uuid()
      FROM bench.event_copy e WHERE e.instance_id = :id
      ON CONFLICT (instance_id, version) DO NOTHING RETURNING version)
$floor_insert
FROM i, h;
EOF
for c in 1 8; do
	j=$((c < 2 ? 1 : 2))
	pgbench_run "$LC_WORK/rf$c.out" -f "$LC_WORK/retry_floor.sql" -c "$c" -j "$j" -T "$RETRY_SECS"
	pgbench_run "$LC_WORK/rh$c.out" -f "$LC_WORK/retry_history.sql" -c "$c" -j "$j" -T "$RETRY_SECS"
	drain 300
	cpu0=$(cpu_seconds "$wpid")
	flushes0=$(metric flyt_instance_pump_wal_flushes_total)
	perf_begin "retry_${c}c"
	pgbench_run "$LC_WORK/r$c.out" -f "$LC_WORK/retry.sql" -c "$c" -j "$j" -T "$RETRY_SECS"
	perf_end
	ours=$(tps_of "$LC_WORK/r$c.out")
	floor=$(tps_of "$LC_WORK/rf$c.out")
	say "retry ${c}c: latency avg $(lat_of "$LC_WORK/r$c.out") ms (floor $(lat_of "$LC_WORK/rf$c.out") ms); backlog after: $(sql 'SELECT count(*) FROM flyt.outbox'); the worker sent the retries with $(calc "($(cpu_seconds "$wpid") - $cpu0) * 1000000 / ($ours * $RETRY_SECS)") us of CPU each and $(($(metric flyt_instance_pump_wal_flushes_total) - flushes0)) WAL flushes of its own"
	history=$(tps_of "$LC_WORK/rh$c.out")
	say "retry ${c}c: the floor with the history row: $(calc "round($history)") tps, $(calc "$history / $floor") of the floor (ours $(calc "$ours / $history") of it)"
	fig "retry_${c}c" "$(calc "round($ours)")" tps "$(calc "round($floor)")" "$(calc "$ours / $floor")"
	drain 300
done

# --- retry latency -------------------------------------------------------------------
# One pgbench client calls flyt_retry at a fixed rate and logs each
# transaction's end (the client has the commit's answer: an upper bound of
# the commit time).  An independent kcat consumer, already positioned at the
# topic's end, stamps each message with its arrival time.  Transaction k
# pairs with message k (one client, so commit order = outbox id order = send
# order on the one partition).  Measured: commit answered to the client ->
# message readable by a consumer, i.e. commit -> broker acknowledgement plus
# one fetch round trip (fetch.wait.max.ms=1), an upper bound.
drain 300
mkfifo "$LC_WORK/lat.fifo"
python3 -u -c '
import sys, time
for line in sys.stdin:
    sys.stdout.write("%.6f %s" % (time.time(), line))
' <"$LC_WORK/lat.fifo" >"$LC_WORK/lat_arrivals.txt" &
STAMP_PID=$!
timeout "$(lc_budget $((LAT_SECS + 60)))" kcat -C -q -u -b "$LC_BROKER_ADDR" -t "$T_RETRY" -o end -J \
	-X fetch.wait.max.ms=1 -X fetch.error.backoff.ms=1 >"$LC_WORK/lat.fifo" 2>/dev/null &
LAT_PID=$!
LC_BG_PIDS+=("$LAT_PID" "$STAMP_PID")
sleep 3
rm -f "$LC_WORK"/latlog*
pgbench_run "$LC_WORK/lat.out" -f "$LC_WORK/retry.sql" -c 1 -R "$LAT_RATE" -T "$LAT_SECS" -l --log-prefix=latlog
ntx=$(cat "$LC_WORK"/latlog* | wc -l)
drain 60
sleep 2
kill -TERM "$LAT_PID" 2>/dev/null || true
wait "$LAT_PID" 2>/dev/null || true
wait "$STAMP_PID" 2>/dev/null || true
narr=$(wc -l <"$LC_WORK/lat_arrivals.txt")
[ "$narr" -ge "$ntx" ] || die "only $narr of $ntx retry messages arrived"
# The last ntx arrivals are this run's messages (nothing else sends retries).
tail -n "$ntx" "$LC_WORK/lat_arrivals.txt" >"$LC_WORK/lat_ours.txt"
read -r p50 p99 pmax pts <<<"$(python3 - "$LC_WORK" <<'EOF'
import glob, json, sys
w = sys.argv[1]
ends = []
for p in glob.glob(w + "/latlog*"):
    for line in open(p):
        f = line.split()
        ends.append(int(f[4]) + int(f[5]) / 1e6)
ends.sort()
arr, cts = [], []
for line in open(w + "/lat_ours.txt"):
    t, js = line.split(" ", 1)
    arr.append(float(t))
    cts.append(json.loads(js).get("ts", 0) / 1000.0)
n = min(len(ends), len(arr))
d = sorted((arr[i] - ends[i]) * 1000 for i in range(n))
c = sorted((ends[i] - cts[i]) * 1000 for i in range(n))
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
print("%.2f %.2f %.2f %.2f" % (q(d, .5), q(d, .99), d[-1], q(c, .5)))
EOF
)"
say "retry latency over $ntx transactions: p50 $p50 ms, p99 $p99 ms, max $pmax ms; record timestamp (the retry's transaction, the event's time) -> commit answered p50 $pts ms"
fig retry_latency_p50 "$p50" ms
fig retry_latency_p99 "$p99" ms

# --- pump + worker memory --------------------------------------------------------------
# The worker is connected and idle; PUMP retry messages are queued in one
# transaction, so the backlog appears at once when it commits, and the
# clock runs from that commit until the outbox is empty: the drain, not the
# time a client takes to connect.  Floor: kcat -P (idempotent, acks=all) of
# the same messages (dumped before the commit) to the same broker and topic.
drain 300
rss0=$(private_kb "$wpid")
prod0=$(metric flyt_instance_produced_total)
per=$(((PUMP + INGEST - 1) / INGEST))
# queue_backlog — queues the backlog, dumps it to pump.txt; sets queued,
# hdr (its flyt.instance-flow-headers) and t0 (the commit, epoch seconds).
queue_backlog() {
	timeout 900 psql -X -qAt -v ON_ERROR_STOP=1 -d postgres >"$LC_WORK/backlog.out" 2>"$LC_WORK/backlog.err" <<EOF ||
BEGIN;
SELECT count(flyt_retry(i.id)) FROM generate_series(1, $per) g, flyt.instance i;
DELETE FROM flyt.outbox WHERE id <= (SELECT id FROM flyt.outbox ORDER BY id DESC OFFSET $PUMP LIMIT 1);
\copy (SELECT key || E'\t' || value FROM flyt.outbox ORDER BY id) TO '$LC_WORK/pump.txt'
SELECT 'queued ' || count(*) FROM flyt.outbox;
SELECT 'first ' || min(id) FROM flyt.outbox;
SELECT 'last ' || max(id) FROM flyt.outbox;
SELECT 'header ' || (headers->>'flyt.instance-flow-headers') FROM flyt.outbox LIMIT 1;
COMMIT;
SELECT 'committed ' || extract(epoch FROM clock_timestamp());
EOF
		die "queue the backlog: $(cat "$LC_WORK/backlog.err")"
	queued=$(sed -n 's/^queued //p' "$LC_WORK/backlog.out")
	hdr=$(sed -n 's/^header //p' "$LC_WORK/backlog.out")
	t0=$(sed -n 's/^committed //p' "$LC_WORK/backlog.out")
	first_id=$(sed -n 's/^first //p' "$LC_WORK/backlog.out")
	last_id=$(sed -n 's/^last //p' "$LC_WORK/backlog.out")
}
# pump_floor BROKERS — kcat -P (idempotent, acks=all) of pump.txt with the
# same headers to the retry topic: messages per second.
pump_floor() {
	local t0 t1
	t0=$(now)
	timeout 600 kcat -P -q -b "$1" -t "$T_RETRY" -K $'\t' -l \
		-H "flyt.instance-flow-headers=$hdr" -H "flyt.event-id=1234567" \
		-X enable.idempotence=true -X acks=all "$LC_WORK/pump.txt" 2>"$LC_WORK/kcat_pump.err" ||
		die "kcat floor on $1: $(tail -3 "$LC_WORK/kcat_pump.err")"
	t1=$(now)
	calc "$queued / ($t1 - $t0)"
}
# pump_drain NAME — waits until the backlog is sent; sets t1.
pump_drain() {
	local tf
	# the oldest row goes first; a probe of the primary key, not a count of
	# the whole backlog every 5 ms (which took a CPU from the worker)
	bench_wait 900 "NOT EXISTS (SELECT FROM flyt.outbox WHERE id = $first_id)" ||
		die "$1: nothing delivered: $(cat "$LC_WORK/wait.err")"
	tf=$(now)
	# the newest row, then (once, normally at once) everything
	bench_wait 900 "NOT EXISTS (SELECT FROM flyt.outbox WHERE id = $last_id)" &&
		bench_wait 900 "$OUTBOX_EMPTY" || die "$1: outbox not drained: $(cat "$LC_WORK/wait.err")"
	t1=$(now)
	say "$1: $queued messages ($(wc -c <"$LC_WORK/pump.txt") bytes of key+value); first deliveries recorded $(calc "$tf - $t0") s after the commit, the last $(calc "$t1 - $tf") s later"
}
perf_begin pump
queue_backlog
cpu0=$(cpu_seconds "$wpid")
pump_drain pump
say "pump: the worker was on a CPU for $(calc "$(cpu_seconds "$wpid") - $cpu0") s of the drain"
perf_end
pump_floor=$(pump_floor "$LC_BROKER_ADDR")
pump_rate=$(calc "$queued / ($t1 - $t0)")
fig pump "$pump_rate" msgs/s "$pump_floor" "$(calc "$pump_rate / $pump_floor")"
rss1=$(private_kb "$wpid")
prod1=$(metric flyt_instance_produced_total)
[ "$(lc_worker_pid)" = "$wpid" ] || die "the worker restarted (pid $wpid -> $(lc_worker_pid))"
say "worker private RSS ${rss0} kB -> ${rss1} kB over $(calc "$prod1 - $prod0") produced messages (after ingest of $INGEST, 2 retry runs and the latency run)"
fig worker_rss_growth "$((rss1 - rss0))" kB

# --- the same against Apache Kafka ------------------------------------------------------
# A real single-node Kafka (script/kafka.sh) with the organisation's topics;
# the worker is pointed at it for these two figures and back afterwards
# (its stored consumer offsets belong to the embedded broker's topics, so
# they are put aside meanwhile).
#  ingest_kafka: INGEST messages produced at once to instance-received of
#    the running, connected worker; from the first produce until stored,
#    by a producer that delivered WARM messages before (feed_open).
#    Floor: kcat -C reading the same messages from the same broker.
#  pump_kafka: as pump, to the real broker.  Floor: kcat -P of the same file.
KAFKA_ON=${FLYT_BENCH_KAFKA:-1}
if [ "$KAFKA_ON" = 1 ]; then
	# shellcheck source=script/kafka.sh
	. "$HERE/../script/kafka.sh"
	LC_CLEANUP_FNS+=(kafka_down)
	kafka_up "$LC_WORK/kafka" >"$LC_WORK/kafka.log" 2>&1 || die "start Kafka: $(tail -n 20 "$LC_WORK/kafka.log")"
	kafka_create_topics "$LC_ORG" 1 >>"$LC_WORK/kafka.log" 2>&1 || die "create the topics on Kafka"
	say "Kafka $KAFKA_RUNNING_VERSION at $KAFKA_BOOTSTRAP, up in ${KAFKA_START_SECONDS}s"
	drain 300
	sql "CREATE TABLE bench.mock_offsets AS SELECT * FROM flyt.consumer_offset; DELETE FROM flyt.consumer_offset" >/dev/null
	sql "ALTER SYSTEM SET flyt_instance.kafka_bootstrap_servers = '$KAFKA_BOOTSTRAP'" >/dev/null
	sql "ALTER SYSTEM SET flyt_instance.kafka_config = '$LC_KAFKA_CONFIG${FLYT_BENCH_KAFKA_CONFIG:+;$FLYT_BENCH_KAFKA_CONFIG}'" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
	lc_wait 60 lc_sql_true "SELECT flyt_status()->>'status' = 'UP'" || die "worker UP on Kafka: $(lc_sql 'SELECT flyt_status()')"

	# WARM messages first, through the same producer, so that the clock
	# starts with a producer that has delivered to the topic (see feed_open)
	WARM=100
	gen_messages "$LC_WORK/warm_kafka.tsv" kafka-warm "$WARM"
	gen_messages "$LC_WORK/ingest_kafka.tsv" kafka "$INGEST"
	feed_open "$KAFKA_BOOTSTRAP"
	feed "$LC_WORK/warm_kafka.tsv"
	feed_sync
	bench_wait 300 "$(received_applied "$WARM")" || die "ingest_kafka, warming up: $(cat "$LC_WORK/wait.err")"
	n0=$(sql "SELECT count(*) FROM flyt.instance")
	t0=$(now)
	feed "$LC_WORK/ingest_kafka.tsv" || die "produce to Kafka"
	bench_wait 300 "$(received_applied $((WARM + INGEST)))" || die "ingest_kafka: $(cat "$LC_WORK/wait.err")"
	t1=$(now)
	feed_close
	[ "$(sql 'SELECT count(*) FROM flyt.instance')" -ge $((n0 + INGEST)) ] ||
		die "ingest_kafka: $(lc_sql 'SELECT count(*) FROM flyt.instance') stored"
	ik_rate=$(calc "$INGEST / ($t1 - $t0)")
	# The floor is the ingest floor (SPEC 9: the database's insert rate of
	# the same payloads); how fast kcat reads them is shown for scale.
	t0=$(now)
	timeout 300 kcat -C -q -b "$KAFKA_BOOTSTRAP" -t "$LC_T_RECEIVED" -o "$WARM" -c "$INGEST" -e \
		-f '%k %h %s\n' >/dev/null 2>"$LC_WORK/kcat_ingest.err" || die "kcat read of ingest_kafka"
	t1=$(now)
	say "ingest_kafka: kcat -C reads the same $INGEST messages at $(calc "$INGEST / ($t1 - $t0)") msgs/s"
	fig ingest_kafka "$ik_rate" msgs/s "$ingest_floor" "$(calc "$ik_rate / $ingest_floor")"
	drain 300

	queue_backlog
	pump_drain pump_kafka
	pk_floor=$(pump_floor "$KAFKA_BOOTSTRAP")
	pk_rate=$(calc "$queued / ($t1 - $t0)")
	fig pump_kafka "$pk_rate" msgs/s "$pk_floor" "$(calc "$pk_rate / $pk_floor")"

	# back to the embedded broker, with its offsets
	kafka_off
	sql "DELETE FROM flyt.consumer_offset; INSERT INTO flyt.consumer_offset SELECT * FROM bench.mock_offsets" >/dev/null
	sql "ALTER SYSTEM RESET flyt_instance.kafka_config" >/dev/null
	kafka_on
	kafka_down
fi

# --- scale -------------------------------------------------------------------------------
# flyt_retry latency (pgbench, 1 client) at random over every stored
# instance: first the N ingested, then with CLEANUP more (expired, like
# the ingested ones, with one REGISTERED history row each).
sql "VACUUM ANALYZE flyt.instance; VACUUM ANALYZE flyt.instance_event; CHECKPOINT" >/dev/null
pgbench_run "$LC_WORK/s_small.out" -f "$LC_WORK/retry.sql" -c 1 -T "$SCALE_SECS"
small_n=$(sql "SELECT count(*) FROM flyt.instance")
drain 300
t0=$(now)
base=$(sql "SELECT max(id) + 1000 FROM flyt.instance")
LC_SQL_TIMEOUT=1800 sql "
INSERT INTO flyt.instance (id, payload, flow_headers, source_application_id, source_application_integration_id,
                           source_application_instance_id, integration_id, created_at)
OVERRIDING SYSTEM VALUE
SELECT g, t.payload,
       jsonb_set(t.flow_headers, '{instanceId}',
                 CASE jsonb_typeof(t.flow_headers->'instanceId') WHEN 'string' THEN to_jsonb(g::text) ELSE to_jsonb(g) END),
       t.source_application_id, t.source_application_integration_id, 'old-' || g, t.integration_id,
       now() - interval '100 days' + (g - $base) * interval '1 ms'
FROM (SELECT * FROM flyt.instance ORDER BY id LIMIT 1) t, generate_series($base, $base + $CLEANUP - 1) g" >/dev/null
LC_SQL_TIMEOUT=1800 sql "
INSERT INTO flyt.instance_event (instance_id, version, event_type, occurred_at, requested_by)
SELECT g, 1, 'REGISTERED', now() - interval '100 days', 'bench' FROM generate_series($base, $base + $CLEANUP - 1) g" >/dev/null
LC_SQL_TIMEOUT=1800 sql "
INSERT INTO bench.instance_copy OVERRIDING SYSTEM VALUE SELECT * FROM flyt.instance WHERE id >= $base;
VACUUM ANALYZE flyt.instance; VACUUM ANALYZE flyt.instance_event; VACUUM ANALYZE bench.instance_copy;
CHECKPOINT" >/dev/null
big_n=$(sql "SELECT count(*) FROM flyt.instance")
say "loaded $CLEANUP expired instances (+ copy for the floor) in $(calc "$(now) - $t0") s; $big_n stored"
cat >"$LC_WORK/retry_all.sql" <<EOF
\set r random(1, $big_n)
\set id CASE WHEN :r <= $small_n THEN $lo + :r - 1 ELSE $base + :r - $small_n - 1 END
SELECT flyt_retry(:id);
EOF
pgbench_run "$LC_WORK/s_big.out" -f "$LC_WORK/retry_all.sql" -c 1 -T "$SCALE_SECS"
ls_=$(lat_of "$LC_WORK/s_small.out")
lb=$(lat_of "$LC_WORK/s_big.out")
say "scale: flyt_retry latency $ls_ ms with $small_n instances, $lb ms with $big_n"
fig scale "$lb" ms "$ls_" "$(calc "$lb / $ls_")"
drain 300

# --- cleanup ------------------------------------------------------------------------------
# Ours: the worker's path, flyt_cleanup('30 days', batch) in one transaction
# per batch until it returns 0 (Kafka off meanwhile, so the CPU goes to the
# database work; the pump has its own figure).  Floor: one
# WITH d AS (DELETE ... RETURNING) INSERT INTO outbox copy on identical rows.
# Both run with flyt_retry at a fixed rate on the ingested instances in the
# background; the p99 of those during our cleanup is cleanup_retry_p99.
kafka_off
cleanup_with_load() { # NAME SQL -> "T0 T1"; pgbench logs in $LC_WORK/cl_NAME_*
	local name=$1 q=$2 t0 t1 pg
	rm -f "$LC_WORK/cl_$name"* "$LC_WORK/stop"
	# Each run starts right after a checkpoint of its own: the same
	# full-page writes for both, and WAL segments recycled rather than
	# created (a checkpoint that the WAL before one run set off would
	# otherwise land on the other).
	sql "CHECKPOINT" >/dev/null
	# Short pgbench runs one after the other, so that every log is complete.
	(cd "$LC_WORK" && k=0 && while [ ! -e stop ]; do
		k=$((k + 1))
		pgbench -n -M prepared -f retry.sql -c 1 -R "$CLEANUP_RATE" -T 3 -l \
			--log-prefix="cl_${name}_$k" postgres >"cl_${name}_$k.pgbench" 2>&1 || break
	done) &
	pg=$!
	LC_BG_PIDS+=("$pg")
	sleep 2
	sql "SELECT pg_stat_reset_shared('wal')" >/dev/null
	t0=$(now)
	LC_SQL_TIMEOUT=1800 sql "$q" >/dev/null
	t1=$(now)
	touch "$LC_WORK/stop"
	wait "$pg" || true
	# what the run and the retries beside it wrote to the WAL
	say "cleanup $name: WAL $(sql "SELECT pg_size_pretty(wal_bytes) || ' in ' || wal_records || ' records, ' || wal_fpi || ' full pages, ' || wal_buffers_full || ' times the WAL buffers were full, ' || wal_sync || ' syncs' FROM pg_stat_wal")"
	echo "$t0 $t1"
}
p99_between() { # NAME T0 T1 -> p99 and count of the retry latencies (ms) that ended in [T0, T1]
	python3 - "$LC_WORK" "$1" "$2" "$3" <<'EOF'
import glob, sys
w, name, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
lat = []
for p in glob.glob(w + "/cl_" + name + "_*"):
    if p.endswith(".pgbench"):
        continue
    for line in open(p):
        f = line.split()
        end = int(f[4]) + int(f[5]) / 1e6
        if t0 <= end <= t1:
            lat.append(int(f[2]) / 1000.0)
lat.sort()
print("%.2f %d" % (lat[min(len(lat) - 1, int(.99 * len(lat)))] if lat else -1, len(lat)))
EOF
}
floor_q="WITH d AS (DELETE FROM bench.instance_copy WHERE created_at < now() - interval '30 days' RETURNING id, flow_headers)
INSERT INTO bench.outbox_copy (event_name, topic, key, headers, value)
SELECT 'instance-deleted', '$LC_PREFIX.instance-deleted', d.id::text,
       jsonb_build_object('flyt.instance-flow-headers', d.flow_headers::text, 'flyt.event-id', '0'), NULL
FROM d WHERE d.flow_headers IS NOT NULL"
# As the worker runs it (worker.c, commit_without_waiting): each batch
# commits without waiting for its WAL to reach disk (a batch lost in a crash
# is redone by the next run, and the pump sends nothing that is not durable).
ours_q="DO \$\$ DECLARE n bigint; BEGIN
  LOOP PERFORM set_config('synchronous_commit', 'off', true);
       SELECT flyt_cleanup('30 days', $CLEANUP_BATCH) INTO n; COMMIT; EXIT WHEN n = 0; END LOOP; END \$\$"
read -r f0 f1 <<<"$(cleanup_with_load floor "$floor_q")"
cl_floor=$(calc "$f1 - $f0")
read -r fp99 fn <<<"$(p99_between floor "$f0" "$f1")"
say "cleanup floor: $cl_floor s, concurrent retry p99 $fp99 ms over $fn"
perf_begin cleanup
read -r o0 o1 <<<"$(cleanup_with_load ours "$ours_q")"
perf_end
cl_ours=$(calc "$o1 - $o0")
read -r op99 on <<<"$(p99_between ours "$o0" "$o1")"
left=$(sql "SELECT count(*) FROM flyt.instance WHERE created_at < now() - interval '30 days'")
queued=$(sql "SELECT count(*) FROM flyt.outbox")
say "cleanup ours: $cl_ours s ($left expired left, $queued queued), concurrent retry p99 $op99 ms over $on"
fig cleanup "$cl_ours" s "$cl_floor" "$(calc "$cl_ours / $cl_floor")"
fig cleanup_retry_p99 "$op99" ms "$fp99" "$(calc "$op99 / $fp99")"

say "total $((SECONDS - T0)) s"
lc_finish >/dev/null
