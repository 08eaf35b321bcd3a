#!/usr/bin/env bash
#
# bench/cleanup_design.sh — measures the design issue 13 proposes for the
# retention cleanup before it is built: expired instances leave by
# detaching and dropping a partition, with only their events (a DELETED
# history row, an instance-deleted outbox row) written row by row.  Plain
# SQL on tables of the extension's shape, no extension and no worker; not
# part of `make test` or `make bench` (`make bench-design` runs it).
#
# Prints, like bench/run.sh, one line per figure (name value unit floor
# ratio) on stdout and "# ..." details on stderr:
#
#   design_cleanup   seconds to expire ROWS instances by detaching their
#                    partition (of PARTS, by instance id range), writing a
#                    DELETED row and an outbox row each in batches of BATCH
#                    (one transaction each, synchronous_commit off, as the
#                    worker commits cleanup batches), then dropping it;
#                    floor: SPEC §9's one WITH d AS (DELETE ... RETURNING)
#                    INSERT INTO outbox statement on a plain copy
#   design_lookup    transactions/s of a retry's row work (read the instance
#                    FOR KEY SHARE, insert its next history row; pgbench,
#                    1 client, prepared, synchronous_commit off so that the
#                    figure is the CPU the statements take, not the disk's
#                    flush) through the partitioned parents with generic
#                    plans, as the extension's SPI plans are
#                    (CURSOR_OPT_GENERIC_PLAN); floor: the same on plain
#                    tables holding the same live instances (the better of
#                    two runs each)
#   design_lookup_custom  the same with custom plans (planned per call)
#   design_direct    the same, naming the partitions themselves (what the
#                    extension's C code would do, routing by id)
#   design_split_pause  ms the parent stays locked while an open partition
#                    [1, MAXVALUE) holding a day of SPLIT instances is
#                    closed at a bound and the next one opened (option (c)
#                    of bench/RESULTS.md: the original's ids kept)
#
# Sizes (environment): FLYT_DESIGN_ROWS=1000000, FLYT_DESIGN_PARTS=61 (a
# day each over the 60-day retention, plus today), FLYT_DESIGN_BATCH=10000,
# FLYT_DESIGN_SECS=10 (each pgbench run), FLYT_DESIGN_SPLIT=100000.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATH=$("${PG_CONFIG:-pg_config}" --bindir):$PATH
# shellcheck source=script/cluster.sh
. "$HERE/../script/cluster.sh"

ROWS=${FLYT_DESIGN_ROWS:-1000000}
PARTS=${FLYT_DESIGN_PARTS:-61}
BATCH=${FLYT_DESIGN_BATCH:-10000}
SECS=${FLYT_DESIGN_SECS:-10}
LIVE=13000 # live instances spread over the other partitions (the bench's `scale` small set)

say() { printf '# %s\n' "$*" >&2; }
die() {
	say "FAILED: $*"
	exit 1
}
now() { date +%s.%N; }
calc() { python3 -c "v = $1; print('%d' % round(v) if abs(v) >= 1000 else '%.4g' % v)"; }
sql() { psql -X -qAt -v ON_ERROR_STOP=1 -d postgres "$@" || die "psql $*"; }

# Under /tmp: the server (the postgres OS user) reads the value files.
WORK=$(mktemp -d /tmp/flyt_design.XXXXXX)
chmod 755 "$WORK"
cluster_trap "rm -rf '$WORK'"
# The bench's settings; no autovacuum, so that both sides run alone.
cluster_create -c "fsync = on" -c "full_page_writes = on" -c "synchronous_commit = on" \
	-c "shared_buffers = 256MB" -c "max_wal_size = 4GB" -c "checkpoint_timeout = 15min" \
	-c "autovacuum = off" >/dev/null || die "cluster_create"
cluster_start >/dev/null || die "cluster_start"
cluster_env

# A value of the bench's size (~1.4 kB): the fixture, padded.
python3 - "$HERE/../test/fixtures/instance-received.value.json" "$HERE/../test/fixtures/instance-received.headers.json" \
	"$WORK/value.json" "$WORK/headers.json" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
v.setdefault("valuePerKey", {})
i = 0
while len(json.dumps(v)) < 1400:
    v["valuePerKey"]["felt%02d" % i] = "Eksempeltekst for felt %d i saken" % i
    i += 1
json.dump(v, open(sys.argv[3], "w"))
json.dump(json.load(open(sys.argv[2])), open(sys.argv[4], "w"))
EOF
chmod 644 "$WORK"/*.json

say "rows=$ROWS parts=$PARTS batch=$BATCH secs=$SECS"
t0=$(now)
sql <<EOF
CREATE SEQUENCE outbox_id_seq;
CREATE TABLE outbox_floor (id bigint PRIMARY KEY DEFAULT nextval('outbox_id_seq'), event_name text NOT NULL,
  topic text NOT NULL, key text, headers jsonb NOT NULL, value text, created_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0, next_attempt_at timestamptz NOT NULL DEFAULT now(), last_error text);
CREATE TABLE outbox_design (LIKE outbox_floor INCLUDING ALL);

-- flyt.instance and flyt.instance_event as they are (the floor's table and
-- the plain side of the lookups) ...
CREATE TABLE instance_plain (id bigint PRIMARY KEY, payload jsonb NOT NULL, flow_headers jsonb,
  source_application_id bigint, source_application_integration_id text, source_application_instance_id text,
  integration_id bigint, created_at timestamptz NOT NULL);
CREATE INDEX ON instance_plain (created_at);
CREATE INDEX ON instance_plain (source_application_id, source_application_instance_id);
CREATE INDEX ON instance_plain (created_at) WHERE flow_headers IS NULL;
CREATE TABLE event_plain (instance_id bigint NOT NULL, version integer NOT NULL, event_type text NOT NULL,
  occurred_at timestamptz NOT NULL DEFAULT now(), requested_by text, correlation_id uuid, detail jsonb,
  PRIMARY KEY (instance_id, version));

-- ... and partitioned by instance id range, the history like its instances,
-- so that a partition of each leaves together; the DELETED rows, which
-- outlive their instance by a window, in a table of their own.
CREATE TABLE instance_part (LIKE instance_plain INCLUDING DEFAULTS) PARTITION BY RANGE (id);
ALTER TABLE instance_part ADD PRIMARY KEY (id);
CREATE INDEX ON instance_part (created_at);
CREATE INDEX ON instance_part (source_application_id, source_application_instance_id);
CREATE INDEX ON instance_part (created_at) WHERE flow_headers IS NULL;
CREATE TABLE event_part (LIKE event_plain INCLUDING DEFAULTS) PARTITION BY RANGE (instance_id);
ALTER TABLE event_part ADD PRIMARY KEY (instance_id, version);
CREATE TABLE deleted_event (instance_id bigint PRIMARY KEY, version integer NOT NULL,
  occurred_at timestamptz NOT NULL DEFAULT now(), requested_by text);
SELECT format('CREATE TABLE instance_%s PARTITION OF instance_part FOR VALUES FROM (%s) TO (%s);'
              ' CREATE TABLE event_%s PARTITION OF event_part FOR VALUES FROM (%s) TO (%s)',
              d, d::bigint << 32, (d::bigint + 1) << 32, d, d::bigint << 32, (d::bigint + 1) << 32)
FROM generate_series(1, $PARTS) d \gexec

CREATE TEMP TABLE src AS
  SELECT pg_read_file('$WORK/value.json')::jsonb AS v, pg_read_file('$WORK/headers.json')::jsonb AS h;
-- partition 1: the expired day; the others: live instances
INSERT INTO instance_part
SELECT (1::bigint << 32) + g, s.v, jsonb_set(s.h, '{instanceId}', to_jsonb((1::bigint << 32) + g)), 2, 'sak', 'old-' || g, 17,
       now() - interval '100 days' + g * interval '1 ms'
FROM src s, generate_series(1, $ROWS) g;
INSERT INTO instance_part
SELECT (d::bigint << 32) + g, s.v, jsonb_set(s.h, '{instanceId}', to_jsonb((d::bigint << 32) + g)), 2, 'sak', 'new-' || g, 17, now()
FROM src s, generate_series(2, $PARTS) d, generate_series(1, $LIVE / ($PARTS - 1)) g;
INSERT INTO event_part SELECT id, 1, 'REGISTERED', created_at, 'bench' FROM instance_part;
INSERT INTO instance_plain SELECT * FROM instance_part;
INSERT INTO event_plain SELECT * FROM event_part;
EOF
sql -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
say "loaded in $(calc "$(now) - $t0") s"

wal() { sql -c "SELECT pg_size_pretty(wal_bytes) || ', ' || wal_records || ' records, ' || wal_fpi || ' full pages' FROM pg_stat_wal"; }
# timed NAME SQL... — each SQL in its own transaction, after a checkpoint
# of its own; prints the seconds.
timed() {
	local name=$1 t0 t1
	shift
	local -a args=()
	for q in "$@"; do args+=(-c "$q"); done
	sql -c "CHECKPOINT" -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
	t0=$(now)
	sql "${args[@]}" >/dev/null
	t1=$(now)
	say "$name: $(calc "$t1 - $t0") s; WAL $(wal)"
	calc "$t1 - $t0"
}

floor=$(timed "cleanup floor" "WITH d AS (DELETE FROM instance_plain WHERE created_at < now() - interval '30 days'
                                          RETURNING id, flow_headers)
INSERT INTO outbox_floor (event_name, topic, key, headers, value)
SELECT 'instance-deleted', 'org.instance-deleted', d.id::text,
       jsonb_build_object('flyt.instance-flow-headers', d.flow_headers::text, 'flyt.event-id', '0'), NULL
FROM d WHERE d.flow_headers IS NOT NULL")
# Detached, the day's instances are out of every retry's reach; their
# DELETED rows and instance-deleted messages are then written batch by
# batch (in id order, so the outbox keeps per-instance order) and the
# tables dropped.
ours=$(timed "cleanup by partition" \
	"ALTER TABLE instance_part DETACH PARTITION instance_1; ALTER TABLE event_part DETACH PARTITION event_1" \
	"DO \$\$
DECLARE
	done_to bigint := 0;
	n bigint;
BEGIN
	LOOP
		PERFORM set_config('synchronous_commit', 'off', true);
		WITH b AS (SELECT id, flow_headers FROM instance_1 WHERE id > done_to ORDER BY id LIMIT $BATCH),
		     v AS (SELECT e.instance_id, max(e.version) AS version FROM event_1 e
		           WHERE e.instance_id > done_to AND e.instance_id <= (SELECT max(id) FROM b) GROUP BY 1),
		     t AS (INSERT INTO deleted_event (instance_id, version, requested_by)
		           SELECT b.id, coalesce(v.version, 0) + 1, 'cleanup' FROM b LEFT JOIN v ON v.instance_id = b.id),
		     o AS (INSERT INTO outbox_design (event_name, topic, key, headers, value)
		           SELECT 'instance-deleted', 'org.instance-deleted', b.id::text,
		                  jsonb_build_object('flyt.instance-flow-headers', b.flow_headers::text,
		                                     'flyt.event-id', gen_random_uuid()::text), NULL
		           FROM b WHERE b.flow_headers IS NOT NULL ORDER BY b.id)
		SELECT count(*), max(id) INTO n, done_to FROM b;
		COMMIT;
		EXIT WHEN n < $BATCH;
	END LOOP;
END
\$\$" \
	"DROP TABLE instance_1, event_1")
[ "$(sql -c 'SELECT count(*) FROM deleted_event')" = "$ROWS" ] || die "the design wrote $(sql -c 'SELECT count(*) FROM deleted_event') DELETED rows"
[ "$(sql -c 'SELECT count(*) FROM outbox_design')" = "$ROWS" ] || die "the design queued $(sql -c 'SELECT count(*) FROM outbox_design') messages"
printf 'design_cleanup %s s %s %s\n' "$ours" "$floor" "$(calc "$ours / $floor")"

# A retry's row work, on a live instance at random; the plain side holds
# the same live instances (and their history) and nothing else.
per=$((LIVE / (PARTS - 1)))
sql -c "CREATE TABLE instance_live (LIKE instance_plain INCLUDING ALL)" \
	-c "INSERT INTO instance_live SELECT * FROM instance_part" \
	-c "CREATE TABLE event_live (LIKE event_plain INCLUDING ALL)" \
	-c "INSERT INTO event_live SELECT * FROM event_part" \
	-c "VACUUM ANALYZE instance_live" -c "VACUUM ANALYZE event_live" \
	-c "VACUUM ANALYZE instance_part" -c "VACUUM ANALYZE event_part" >/dev/null
lookup() { # NAME INSTANCE_TABLE EVENT_TABLE FIRST_PART LAST_PART PLAN_CACHE_MODE -> tps
	cat >"$WORK/$1.sql" <<EOF
\set d random($4, $5)
\set g random(1, $per)
\set id (:d * 4294967296) + :g
BEGIN;
SELECT length(payload::text) FROM $2 WHERE id = :id FOR KEY SHARE;
INSERT INTO $3 (instance_id, version, event_type)
SELECT :id, coalesce(max(version), 0) + 1, 'RETRY_REQUESTED' FROM $3 WHERE instance_id = :id;
END;
EOF
	chmod 644 "$WORK/$1.sql"
	local tps best=0
	for _ in 1 2; do
		tps=$(cd "$WORK" && PGOPTIONS="-c synchronous_commit=off -c plan_cache_mode=$6" \
			pgbench -n -M prepared -c 1 -T "$SECS" -f "$1.sql" postgres 2>"$1.err" |
			awk '/^tps/ { printf "%.0f\n", $3 }')
		[ -n "$tps" ] || die "pgbench $1: $(tail -3 "$WORK/$1.err")"
		if [ "$tps" -gt "$best" ]; then best=$tps; fi
	done
	echo "$best"
}
mid=$(((PARTS + 2) / 2))
plain=$(lookup plain instance_live event_live 2 "$PARTS" force_generic_plan)
parent=$(lookup parent instance_part event_part 2 "$PARTS" force_generic_plan)
custom=$(lookup custom instance_part event_part 2 "$PARTS" force_custom_plan)
direct=$(lookup direct "instance_$mid" "event_$mid" "$mid" "$mid" force_generic_plan)
say "lookups: plain $plain tps, through the parents $parent tps (generic plans), $custom tps (custom plans), partition named $direct tps"
printf 'design_lookup %s tps %s %s\n' "$parent" "$plain" "$(calc "$parent / $plain")"
printf 'design_lookup_custom %s tps %s %s\n' "$custom" "$plain" "$(calc "$custom / $plain")"
printf 'design_direct %s tps %s %s\n' "$direct" "$plain" "$(calc "$direct / $plain")"

# --- option (c) of bench/RESULTS.md: closing the open partition once a day ---
# The open partition [1, MAXVALUE) holds a day of SPLIT instances.  A bound
# T (the sequence's last value plus a margin) is added as a NOT VALID check
# (new rows obey it at once), validated under SHARE UPDATE EXCLUSIVE (a
# scan that blocks no retry), then, under a short ACCESS EXCLUSIVE lock of
# the parent, the partition is detached, attached again FROM (1) TO (T)
# (the valid check spares the scan) and [T, MAXVALUE) created.
#   design_split_pause  ms the parent is locked for that (floor: -)
SPLIT=${FLYT_DESIGN_SPLIT:-100000}
sql <<EOF
CREATE SEQUENCE split_seq;
CREATE TABLE instance_split (LIKE instance_plain INCLUDING DEFAULTS) PARTITION BY RANGE (id);
ALTER TABLE instance_split ADD PRIMARY KEY (id);
CREATE INDEX ON instance_split (created_at);
CREATE INDEX ON instance_split (source_application_id, source_application_instance_id);
CREATE INDEX ON instance_split (created_at) WHERE flow_headers IS NULL;
CREATE TABLE split_open PARTITION OF instance_split FOR VALUES FROM (1) TO (MAXVALUE);
CREATE TEMP TABLE src AS
  SELECT pg_read_file('$WORK/value.json')::jsonb AS v, pg_read_file('$WORK/headers.json')::jsonb AS h;
INSERT INTO instance_split
SELECT nextval('split_seq'), s.v, s.h, 2, 'sak', 'day-' || g, 17, now() FROM src s, generate_series(1, $SPLIT) g;
EOF
sql -c "VACUUM ANALYZE instance_split" -c "CHECKPOINT" >/dev/null
bound=$(sql -c "SELECT last_value + 10000 FROM split_seq")
t0=$(now)
sql -c "ALTER TABLE split_open ADD CONSTRAINT split_open_bound CHECK (id >= 1 AND id < $bound) NOT VALID" >/dev/null
t1=$(now)
sql -c "ALTER TABLE split_open VALIDATE CONSTRAINT split_open_bound" >/dev/null
t2=$(now)
# the locked transaction, timed by psql (\timing, each statement's round
# trip), statement by statement
psql -X -qAt -v ON_ERROR_STOP=1 -d postgres >"$WORK/split.out" 2>&1 <<EOF || die "closing the open partition: $(cat "$WORK/split.out")"
SET client_min_messages = debug1;
\timing on
BEGIN;
LOCK TABLE instance_split IN ACCESS EXCLUSIVE MODE;
ALTER TABLE instance_split DETACH PARTITION split_open;
ALTER TABLE instance_split ATTACH PARTITION split_open FOR VALUES FROM (1) TO ($bound);
CREATE TABLE split_next PARTITION OF instance_split FOR VALUES FROM ($bound) TO (MAXVALUE);
SELECT setval('split_seq', $bound, false);
COMMIT;
EOF
grep -q 'implied by existing constraints' "$WORK/split.out" || die "ATTACH scanned the partition: $(cat "$WORK/split.out")"
pause=$(awk '/^Time: / { s += $2 } END { printf "%.1f\n", s }' "$WORK/split.out")
sql -c "INSERT INTO instance_split SELECT nextval('split_seq'), v, h, 2, 'sak', 'next', 17, now() FROM
          (SELECT pg_read_file('$WORK/value.json')::jsonb AS v, pg_read_file('$WORK/headers.json')::jsonb AS h) s" >/dev/null
[ "$(sql -c 'SELECT count(*) FROM split_next')" = 1 ] || die "the next instance did not land in the new partition"
say "closing a day of $SPLIT: NOT VALID check $(calc "($t1 - $t0) * 1000") ms, validation $(calc "($t2 - $t1) * 1000") ms (no retry waits), locked transaction $pause ms (psql's timing, commit included)"
printf 'design_split_pause %s ms - -\n' "$pause"
