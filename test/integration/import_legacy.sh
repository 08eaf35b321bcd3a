#!/usr/bin/env bash
#
# CALL flyt_import_legacy (issue 12): the Java fint-flyt-instance-service's
# tables (test/fixtures/legacy/schema.sql, from INTEROP.md 1.2) filled with
# 10,000 instance trees (fill.sql) in a database of their own, imported
#
#   A. with pg_dump -n <schema> | pg_restore into the extension's database
#   B. with postgres_fdw's IMPORT FOREIGN SCHEMA from that database, the
#      sequence as a foreign table; interrupted by statement_timeout, resumed
#
# and compared DTO for DTO with the DTOs built from the source by INTEROP's
# read-back queries (expected_dtos.sql), createdAt and created_at included.
# Then: a second CALL imports nothing and changes nothing, new ids continue
# above the source's sequence, flyt_instance_dispatched deletes an imported
# instance (which a later CALL does not bring back), nothing goes to the
# outbox, and bad sources, edge cases and privileges give clear errors or
# report lines.  Prints the import rate (`# import: N roots/s`).
#
# No Kafka: runs against the shared test cluster (PGHOST/PGPORT/PGUSER from
# test/run.sh), in databases of its own that it drops at the end.
set -euo pipefail

repo=${FLYT_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
fixtures=$repo/test/fixtures/legacy
roots=10000

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() {
	echo "not ok - $1"
	failed=$((failed + 1))
	local d
	for d in "${@:2}"; do [ -n "$d" ] && printf '#   %s\n' "$d"; done
	return 0
}
check_eq() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "expected: $2" "got:      $3"; fi; }
note() { printf '# %s\n' "$*"; }
# psql_q DB ARGS... — quiet, unaligned, stop on the first error.
psql_q() {
	local db=$1
	shift
	timeout 300 psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"
}
# sql_err DB SQL — runs SQL expecting an error; prints "SQLSTATE: message"
# and the DETAIL line, if any.
sql_err() {
	local out
	out=$(printf '\\set VERBOSITY verbose\n%s\n' "$2" | timeout 60 psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" -f - 2>&1) && {
		echo "no error"
		return 0
	}
	printf '%s\n' "$out" | sed -n 's/^psql:[^ ]* ERROR:  \(.*\)$/\1/p; s/^DETAIL:  \(.*\)$/\1/p'
}
now_ms() { date +%s%3N; }

OLD=flyt_legacy_java
DUMP=flyt_import_dump
FDW=flyt_import_fdw
EDGE=flyt_import_edge
work=$(mktemp -d)
drop_dbs() {
	local db
	for db in "$DUMP" "$FDW" "$EDGE" "$OLD"; do
		psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
	done
	psql -X -q -d postgres -c 'DROP ROLE IF EXISTS flyt_import_nobody' >/dev/null 2>&1 || true
}
cleanup() {
	drop_dbs
	rm -rf "$work"
}
trap cleanup EXIT
drop_dbs

# Sessions in a time zone other than UTC: created_at must not depend on it.
export PGTZ=Europe/Oslo

# --- the Java service's database ------------------------------------------------
psql_q postgres -c "CREATE DATABASE $OLD"
psql_q "$OLD" -c 'CREATE SCHEMA fintlabs_no' -c 'SET search_path = fintlabs_no' -f "$fixtures/schema.sql"
psql_q "$OLD" -v roots=$roots -c 'SET search_path = fintlabs_no' -f "$fixtures/fill.sql" >/dev/null
check_eq "the fixture has Hibernate's foreign keys and bigserial sequences (INTEROP 1.2)" \
	"fk7bq0pdfgejo5hxcakb3vxq079 fkjw2gv69q6faqejinh37u6te94 fkp6f8ogjmuv3trkdxfp1eb7so0 instance_object_collection_id_seq instance_object_id_seq" \
	"$(psql_q "$OLD" -c "SELECT string_agg(n, ' ' ORDER BY n) FROM (
		SELECT conname::text FROM pg_constraint WHERE contype = 'f' AND connamespace = 'fintlabs_no'::regnamespace
		UNION ALL SELECT relname::text FROM pg_class WHERE relkind = 'S' AND relnamespace = 'fintlabs_no'::regnamespace) x(n)")"
read -r src_roots src_objects src_collections src_values src_seq < <(psql_q "$OLD" -F ' ' -c "SELECT
	(SELECT count(*) FROM fintlabs_no.instance_object WHERE instance_object_collection_id IS NULL),
	(SELECT count(*) FROM fintlabs_no.instance_object),
	(SELECT count(*) FROM fintlabs_no.instance_object_collection),
	(SELECT count(*) FROM fintlabs_no.instance_object_value_per_key),
	(SELECT last_value FROM fintlabs_no.instance_object_id_seq)")
note "source: $src_roots roots, $src_objects objects, $src_collections collections, $src_values values, sequence at $src_seq"
check_eq "the fixture has $roots roots, three levels deep, empty collections, NULL values, æøå with quotes and backslashes" \
	"$roots 3 t t t" \
	"$(psql_q "$OLD" -F ' ' -c "SET search_path = fintlabs_no" -c "WITH RECURSIVE t (id, depth) AS (
			SELECT id, 1 FROM instance_object WHERE instance_object_collection_id IS NULL
		  UNION ALL
			SELECT o.id, t.depth + 1 FROM t JOIN instance_object_collection c ON c.instance_object_id = t.id
			JOIN instance_object o ON o.instance_object_collection_id = c.id)
		SELECT (SELECT count(*) FROM t WHERE depth = 1), (SELECT max(depth) FROM t),
		EXISTS (SELECT FROM instance_object_collection c WHERE NOT EXISTS (SELECT FROM instance_object o WHERE o.instance_object_collection_id = c.id)),
		EXISTS (SELECT FROM instance_object_value_per_key WHERE value IS NULL),
		EXISTS (SELECT FROM instance_object_value_per_key WHERE value LIKE '%ø%')
		AND EXISTS (SELECT FROM instance_object_value_per_key WHERE strpos(value, '\"') > 0 AND strpos(value, E'\\\\') > 0)")"

# The DTOs as INTEROP's read-back queries give them.
psql_q "$OLD" -c 'SET search_path = fintlabs_no' -f "$fixtures/expected_dtos.sql" >"$work/expected"
check_eq "the read-back queries give a DTO for every root" "$roots" "$(wc -l <"$work/expected")"

# compare_dtos NAME DB — every instance of DB against the expected DTOs.
compare_dtos() {
	psql_q "$2" -f "$fixtures/actual_dtos.sql" >"$work/actual.$2"
	if diff "$work/expected" "$work/actual.$2" >"$work/diff.$2"; then
		ok "$1: flyt_instance(id) equals the source's DTO for all $(wc -l <"$work/actual.$2") roots, createdAt and created_at too"
	else
		not_ok "$1: flyt_instance(id) equals the source's DTO for every root" \
			"$(grep -c '^<' "$work/diff.$2") expected lines differ or are missing, $(grep -c '^>' "$work/diff.$2") unexpected" \
			"$(head -c 600 "$work/diff.$2")"
	fi
}

# state DB — a fingerprint of everything the import writes.
state() {
	psql_q "$1" -c "SELECT md5(string_agg(id || payload::text || coalesce(flow_headers::text, '-') || created_at, ',' ORDER BY id)),
		(SELECT md5(string_agg(instance_id || event_type || version, ',' ORDER BY instance_id, version)) FROM flyt.instance_event),
		(SELECT count(*) FROM flyt.outbox), (SELECT last_value FROM flyt.instance_id_seq) FROM flyt.instance"
}

# --- A: pg_dump -n | pg_restore ---------------------------------------------------------
psql_q postgres -c "CREATE DATABASE $DUMP"
pg_dump -Fc -n fintlabs_no -d "$OLD" -f "$work/java.dump"
pg_restore -d "$DUMP" "$work/java.dump"
psql_q "$DUMP" -c 'CREATE EXTENSION flyt_instance'

# The import in the background, its progress watched in pg_stat_activity.
start=$(now_ms)
psql_q "$DUMP" -c "CALL flyt_import_legacy('fintlabs_no')" >"$work/call.out" 2>"$work/call.err" &
call_pid=$!
: >"$work/progress"
while kill -0 "$call_pid" 2>/dev/null; do
	psql_q postgres -c "SELECT query FROM pg_stat_activity WHERE datname = '$DUMP' AND query LIKE 'flyt_import_legacy:%'" >>"$work/progress" 2>/dev/null || true
	sleep 0.05
done
rc=0
wait "$call_pid" || rc=$?
elapsed=$(($(now_ms) - start))
check_eq "A: CALL flyt_import_legacy('fintlabs_no') returns imported = $roots" "0 $roots" "$rc $(cat "$work/call.out")"
note "import: $((roots * 1000 / (elapsed > 0 ? elapsed : 1))) roots/s ($roots roots, $src_objects objects, $src_values values in $elapsed ms, pg_dump path, default batch_size)"
if grep -Eq "^flyt_import_legacy: [0-9]+ of $roots roots$" "$work/progress"; then
	ok "A: pg_stat_activity shows the progress ($(grep -E 'of [0-9]+ roots' "$work/progress" | sort -u | head -3 | tr '\n' ';'))"
else
	not_ok "A: pg_stat_activity shows the progress" "seen: $(sort -u "$work/progress" | head -5 | tr '\n' ';')"
fi
if grep -q "NOTICE:  imported $roots instances from schema \"fintlabs_no\"" "$work/call.err"; then
	ok "A: the CALL says what it imported"
else
	not_ok "A: the CALL says what it imported" "$(cat "$work/call.err")"
fi

compare_dtos A "$DUMP"

check_eq "A: the report: succeeded, roots, objects, collections and values imported, orphans counted, sequence read" \
	"succeeded|$roots|$roots|$roots|0|0|$((src_objects - 1))|$((src_collections - 2))|$((src_values - 2))|4|$src_seq|$src_seq|t" \
	"$(psql_q "$DUMP" -c "SELECT status, roots_in_source, roots_done, roots_imported, roots_already_imported, roots_skipped,
		objects_imported, collections_imported, values_imported, rows_skipped, source_sequence_value, ids_continue_above,
		finished_at >= started_at FROM flyt.import_run")"
check_eq "A: the rows of no instance are listed with their reason, ids only" \
	"orphan_collection|instance_object_collection|2;orphan_object|instance_object|1;orphan_value|instance_object_value_per_key|1|{\"values\": 2}" \
	"$(psql_q "$DUMP" -c "SELECT string_agg(concat_ws('|', reason, source_table, n, detail), ';' ORDER BY reason) FROM (
		SELECT reason, source_table, count(*) AS n, max(detail::text) AS detail FROM flyt.import_skipped GROUP BY 1, 2) s")"
check_eq "A: one IMPORTED history row (version 1) per instance, no flow headers, no outbox message" \
	"$roots|$roots|0|0" \
	"$(psql_q "$DUMP" -c "SELECT (SELECT count(*) FROM flyt.instance_event WHERE event_type = 'IMPORTED' AND version = 1 AND detail ? 'importRun'),
		(SELECT count(*) FROM flyt.instance_event), (SELECT count(*) FROM flyt.instance WHERE flow_headers IS NOT NULL),
		(SELECT count(*) FROM flyt.outbox)")"

before=$(state "$DUMP")
check_eq "A: a second CALL imports 0" "0" "$(psql_q "$DUMP" -c "CALL flyt_import_legacy('fintlabs_no')" 2>/dev/null)"
check_eq "A: ... and changes nothing" "$before" "$(state "$DUMP")"
check_eq "A: ... and reports every root as imported before" "succeeded|0|$roots|0" \
	"$(psql_q "$DUMP" -c "SELECT status, roots_imported, roots_already_imported, roots_skipped FROM flyt.import_run ORDER BY id DESC LIMIT 1")"

first_root=$(head -1 "$work/expected" | cut -f1)
new_id=$(psql_q "$DUMP" -c "SELECT flyt_register_instance('{\"sourceApplicationId\": 2, \"correlationId\": \"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11\"}', '{}')")
if [ "$new_id" -gt "$src_seq" ]; then
	ok "A: the next registered instance gets id $new_id, above the source sequence's $src_seq"
else
	not_ok "A: the next registered instance gets an id above the source sequence's $src_seq" "got $new_id"
fi
check_eq "A: flyt_instance_dispatched of imported instance $first_root deletes it" "t|0|IMPORTED,DISPATCHED,DELETED" \
	"$(psql_q "$DUMP" -c "SELECT flyt_instance_dispatched('{\"sourceApplicationId\": 2, \"instanceId\": $first_root, \"correlationId\": \"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a12\"}')" \
		-c "SELECT count(*) FROM flyt.instance WHERE id = $first_root" \
		-c "SELECT string_agg(event_type, ',' ORDER BY version) FROM flyt_instance_history($first_root)" | paste -sd'|')"
check_eq "A: a later CALL does not bring the dispatched instance back" "0|0" \
	"$(psql_q "$DUMP" -c "CALL flyt_import_legacy('fintlabs_no', 5000)" -c "SELECT count(*) FROM flyt.instance WHERE id = $first_root" 2>/dev/null | paste -sd'|')"

# --- B: postgres_fdw, interrupted and resumed --------------------------------------------
psql_q postgres -c "CREATE DATABASE $FDW"
psql_q "$FDW" <<SQL
CREATE EXTENSION flyt_instance;
CREATE EXTENSION postgres_fdw;
CREATE SERVER java_instance FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '$PGHOST', port '$PGPORT', dbname '$OLD');
CREATE USER MAPPING FOR CURRENT_USER SERVER java_instance OPTIONS (user '$PGUSER');
CREATE SCHEMA legacy;
IMPORT FOREIGN SCHEMA fintlabs_no FROM SERVER java_instance INTO legacy;
CREATE FOREIGN TABLE legacy.instance_object_id_seq (last_value bigint)
	SERVER java_instance OPTIONS (schema_name 'fintlabs_no', table_name 'instance_object_id_seq');
SQL
check_eq "B: IMPORT FOREIGN SCHEMA gives the three tables, not the sequence" \
	"instance_object instance_object_collection instance_object_id_seq instance_object_value_per_key" \
	"$(psql_q "$FDW" -c "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class WHERE relnamespace = 'legacy'::regnamespace AND relkind = 'f'")"

# Cancelled part-way by statement_timeout: some batches are committed.
part=0
timeout_ms=$((elapsed * 2 / 5))
[ "$timeout_ms" -ge 150 ] || timeout_ms=150
for _ in 1 2 3 4 5; do
	err=$(sql_err "$FDW" "SET statement_timeout = $timeout_ms; CALL flyt_import_legacy('legacy', 200);")
	part=$(psql_q "$FDW" -c 'SELECT count(*) FROM flyt.instance')
	note "statement_timeout = $timeout_ms ms: $part imported before the cancel ($err)"
	[ "$part" -eq 0 ] || break
	timeout_ms=$((timeout_ms * 2))
done
if [ "$part" -gt 0 ] && [ "$part" -lt "$roots" ] && [ $((part % 200)) -eq 0 ] && [[ $err == 57014:* ]]; then
	ok "B: a CALL cancelled part-way keeps its committed batches ($part of $roots roots)"
else
	not_ok "B: a CALL cancelled part-way keeps its committed batches" "imported $part, error: $err"
fi
check_eq "B: a resumed CALL imports the rest" "$((roots - part))" "$(psql_q "$FDW" -c "CALL flyt_import_legacy('legacy')" 2>/dev/null)"
check_eq "B: the cancelled run is reported interrupted, the resumed one succeeded" \
	"interrupted|$part;succeeded|$((roots - part))|$part|$src_seq" \
	"$(psql_q "$FDW" -c "SELECT string_agg(concat_ws('|', status, roots_imported, CASE WHEN status = 'succeeded' THEN roots_already_imported END,
		CASE WHEN status = 'succeeded' THEN source_sequence_value END), ';' ORDER BY id) FROM flyt.import_run WHERE status <> 'interrupted' OR roots_imported > 0")"
compare_dtos B "$FDW"
before=$(state "$FDW")
check_eq "B: a second CALL imports 0 and changes nothing" "0|$before" \
	"$(psql_q "$FDW" -c "CALL flyt_import_legacy('legacy')" 2>/dev/null)|$(state "$FDW")"
check_eq "B: the identity sequence continues above the source's sequence" "$src_seq" \
	"$(psql_q "$FDW" -c 'SELECT last_value FROM flyt.instance_id_seq')"

# --- bad sources, edge cases, privileges --------------------------------------------------
psql_q postgres -c "CREATE DATABASE $EDGE"
psql_q "$EDGE" -c 'CREATE EXTENSION flyt_instance'
check_eq "a missing schema is named" '3F000: source schema "nope" does not exist' \
	"$(sql_err "$EDGE" "CALL flyt_import_legacy('nope')" | head -1)"
psql_q "$EDGE" -c 'CREATE SCHEMA partial' -c 'CREATE TABLE partial.instance_object (id bigint)'
check_eq "missing tables are named" \
	"42P01: source schema \"partial\" lacks tables of the Java service|Missing: instance_object_collection, instance_object_value_per_key." \
	"$(sql_err "$EDGE" "CALL flyt_import_legacy('partial')" | head -2 | paste -sd'|')"
psql_q "$EDGE" -c 'CREATE TABLE partial.instance_object_collection (id bigint, key text)' \
	-c 'CREATE TABLE partial.instance_object_value_per_key (instance_object_id bigint, key text, value text)'
check_eq "missing columns are named" \
	"42703: tables in source schema \"partial\" lack columns of the Java service|Missing: instance_object.instance_object_collection_id, instance_object.created_at, instance_object_collection.instance_object_id." \
	"$(sql_err "$EDGE" "CALL flyt_import_legacy('partial')" | head -2 | paste -sd'|')"
psql_q "$EDGE" -c 'ALTER TABLE partial.instance_object ADD instance_object_collection_id bigint, ADD created_at timestamptz' \
	-c 'ALTER TABLE partial.instance_object_collection ADD instance_object_id bigint'
check_eq "a created_at with a time zone is refused" \
	"42804: columns in source schema \"partial\" have types the Java service does not use|instance_object.created_at is timestamp with time zone, not timestamp without time zone." \
	"$(sql_err "$EDGE" "CALL flyt_import_legacy('partial')" | head -2 | paste -sd'|')"
check_eq "inside a transaction block it refuses to run" "25001: flyt_import_legacy cannot run inside a transaction block" \
	"$(sql_err "$EDGE" "BEGIN; CALL flyt_import_legacy('partial'); COMMIT;" | head -1)"
check_eq "batch_size is checked" "22023: batch_size must be between 1 and 100000" \
	"$(sql_err "$EDGE" "CALL flyt_import_legacy('partial', 0)" | head -1)"
psql_q "$EDGE" -c 'CREATE ROLE flyt_import_nobody' -c 'GRANT EXECUTE ON PROCEDURE flyt_import_legacy(name, integer, bigint) TO flyt_import_nobody'
check_eq "a role that does not own flyt.instance may not import, even with EXECUTE" "42501: permission denied to import instances" \
	"$(sql_err "$EDGE" "SET ROLE flyt_import_nobody; CALL flyt_import_legacy('partial');" | head -1)"
check_eq "PUBLIC cannot execute it" "f" \
	"$(psql_q "$EDGE" -c "SELECT has_function_privilege('public', 'flyt_import_legacy(name, integer, bigint)', 'EXECUTE')")"
check_eq "failed calls imported nothing" "0|0" \
	"$(psql_q "$EDGE" -c 'SELECT (SELECT count(*) FROM flyt.instance), (SELECT count(*) FROM flyt.import_run)')"

# Edge cases, in a source without its sequence: ids are checked per root.
psql_q "$EDGE" -c 'CREATE SCHEMA edge' -c 'SET search_path = edge' -f "$fixtures/schema.sql"
used=$(psql_q "$EDGE" -c "SELECT flyt_register_instance('{\"sourceApplicationId\": 2, \"correlationId\": \"9b7a1f0e-3c55-4e0a-9d1e-5f2b0c1d7a11\"}', '{}')")
psql_q "$EDGE" <<SQL
SET search_path = edge;
SET session_replication_role = replica;
-- $used: an id flyt_instance already uses
INSERT INTO instance_object VALUES ($used, NULL, '2026-01-01 00:00:00');
-- 10: fine; 20: a value too large for max_instance_bytes = 1024; 30: a collection without key;
-- 40: two collections with one key; 50: 64 levels below the root
INSERT INTO instance_object VALUES (10, NULL, '2026-01-01 00:00:10'), (20, NULL, '2026-01-01 00:00:20'),
	(30, NULL, '2026-01-01 00:00:30'), (40, NULL, '2026-01-01 00:00:40'), (50, NULL, '2026-01-01 00:00:50');
INSERT INTO instance_object_value_per_key VALUES (10, 'liten', 'k'), (20, repeat('ø', 1000), 'stor');
INSERT INTO instance_object_collection VALUES (31, 30, NULL), (41, 40, 'k'), (42, 40, 'k');
INSERT INTO instance_object_collection SELECT 1000 + d, CASE WHEN d = 0 THEN 50 ELSE 1000 + d END, 'ned' FROM generate_series(0, 63) d;
INSERT INTO instance_object SELECT 1000 + d + 1, 1000 + d, '2026-01-01 00:00:50' FROM generate_series(0, 63) d;
ALTER TABLE instance_object ALTER id DROP DEFAULT;
DROP SEQUENCE instance_object_id_seq;
SQL
out=$(psql_q "$EDGE" -c 'SET flyt_instance.max_instance_bytes = 1024' -c "CALL flyt_import_legacy('edge', 2)" 2>&1)
check_eq "edge: only the importable root is imported" "1" "$(printf '%s\n' "$out" | grep -v ':' | tail -1)"
if printf '%s\n' "$out" | grep -q 'WARNING:  source schema "edge" has no instance_object_id_seq'; then
	ok "edge: a source without its sequence gives a warning"
else
	not_ok "edge: a source without its sequence gives a warning" "$out"
fi
check_eq "edge: every other root is skipped with its reason" \
	"$used|id_in_use;20|too_large|{\"bytes\": 2055, \"limit\": 1024};30|collection_without_key|{\"collection\": 31};40|duplicate_collection_key|{\"collection\": 42};50|too_deep|{\"depth\": 65, \"limit\": 64}" \
	"$(psql_q "$EDGE" -c "SELECT string_agg(concat_ws('|', source_id, reason, detail), ';' ORDER BY source_id) FROM flyt.import_skipped WHERE source_table = 'instance_object'")"
check_eq "edge: the report counts them; ids continue above the largest source id" "succeeded|1|5||1064" \
	"$(psql_q "$EDGE" -c "SELECT status, roots_imported, roots_skipped, source_sequence_value, ids_continue_above FROM flyt.import_run ORDER BY id DESC LIMIT 1")"
check_eq "edge: the instance that had id $used is untouched, 10 imported" "{\"valuePerKey\": {}, \"objectCollectionPerKey\": {}}|{\"id\": 10, \"valuePerKey\": {\"k\": \"liten\"}, \"objectCollectionPerKey\": {}}" \
	"$(psql_q "$EDGE" -c "SELECT (SELECT payload FROM flyt.instance WHERE id = $used)::text || '|' || (flyt_instance(10) - 'createdAt')::text")"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
