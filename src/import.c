/*-------------------------------------------------------------------------
 *
 * import.c
 *	  CALL flyt_import_legacy(source_schema, batch_size): the instances of the
 *	  Java fint-flyt-instance-service, imported from its three tables
 *	  (INTEROP.md section 1) in a schema of this database.
 *
 * The operator puts the tables there with pg_dump -n / pg_restore, or as
 * foreign tables with postgres_fdw's IMPORT FOREIGN SCHEMA (docs/cutover.md).
 * The import
 *
 *	- copies the skeleton of the source (ids and links of instance_object and
 *	  instance_object_collection) into temporary tables and finds, with one
 *	  recursive query, the root of every object: the source has no index on
 *	  its foreign keys, and a foreign table is best read once, in one go;
 *	- records the rows that belong to no instance (orphans) in the report;
 *	- moves flyt.instance's id sequence above every id the Java service's
 *	  instance_object_id_seq handed out (roots and nested objects share it);
 *	- then imports the roots in id order, batch_size roots per transaction:
 *	  one query each for the batch's objects, collections and values (the
 *	  values by the primary key of instance_object_value_per_key), the trees
 *	  built here with jansson, one INSERT of all instances and one of all
 *	  IMPORTED history rows.
 *
 * It is a procedure, not a function, because it commits after each batch: an
 * import of millions of rows neither holds one huge transaction nor loses
 * its work when interrupted.  PostgreSQL allows transaction control only in
 * a procedure that is neither SECURITY DEFINER nor has a SET clause, so this
 * one runs with the caller's rights, which must own flyt.instance (or be a
 * superuser), and every name in its SQL is schema-qualified instead of
 * search_path being pinned.
 *
 * Resumable and idempotent: a root that has an IMPORTED history row was
 * imported before and is passed over, so a second run imports nothing and a
 * run that was interrupted continues where the last committed batch ended.
 * An id that flyt_instance already uses for an instance of its own is never
 * overwritten (skipped, id_in_use).
 *
 * Nothing goes to Kafka (no flyt.outbox row): the rest of Flyt already knows
 * these instances.  Flow headers are NULL: the original never stored them.
 * No value of an instance is ever logged or put into the report.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type_d.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "history.h"
#include "import.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_import_legacy);

/*
 * Taken by every transaction of an import: two imports running at once
 * take turns batch by batch, and each passes over what the other imported.
 */
#define IMPORT_LOCK_KEY INT64CONST(0x666c79745f696d70)	/* "flyt_imp" */

/* An object of the batch being built, by its source id. */
typedef struct ImportObject
{
	int64		id;
	json_t	   *values;			/* its valuePerKey */
	json_t	   *collections;	/* its objectCollectionPerKey */
	int			root;			/* index into the batch's roots */
	char		status;			/* for simplehash */
} ImportObject;

#define SH_PREFIX objhash
#define SH_ELEMENT_TYPE ImportObject
#define SH_KEY_TYPE int64
#define SH_KEY id
#define SH_HASH_KEY(tb, key) murmurhash32((uint32) (key) ^ (uint32) ((uint64) (key) >> 32))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* A collection of the batch being built, by its source id. */
typedef struct ImportCollection
{
	int64		id;
	json_t	   *members;
	char		status;
} ImportCollection;

#define SH_PREFIX collhash
#define SH_ELEMENT_TYPE ImportCollection
#define SH_KEY_TYPE int64
#define SH_KEY id
#define SH_HASH_KEY(tb, key) murmurhash32((uint32) (key) ^ (uint32) ((uint64) (key) >> 32))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* One root of the batch. */
typedef struct ImportRoot
{
	int64		id;
	TimestampTz created_at;
	bool		wanted;			/* neither imported before nor in use */
	bool		already;		/* imported before */
	const char *skip;			/* why it is not imported, or NULL */
	char	   *skip_detail;	/* JSON text, or NULL */
	json_t	   *object;
	int			max_depth;
	int64		objects;
	int64		collections;
	int64		values;
} ImportRoot;

/* A nested object waiting to be put into its collection. */
typedef struct NestedObject
{
	int64		collection_id;
	json_t	   *object;
} NestedObject;

/* One call of flyt_import_legacy. */
typedef struct ImportRun
{
	MemoryContext batch_cxt;	/* reset for each batch */
	char	   *schema;
	char	   *qschema;		/* quoted for SQL */
	bool		has_sequence;
	int			batch_size;
	int64		run_id;
	int64		roots_total;
	int64		roots_seen;
	int64		imported;
	int64		already;
	int64		skipped;
	int64		orphans;
	int64		continue_above; /* flyt.instance ids continue above this */
	int64		last_root;
	char	   *requested_by;
	char	   *event_detail;
} ImportRun;

/* Kinds of column types the import reads. */
typedef enum ColumnKind
{
	COL_INTEGER,
	COL_TEXT,
	COL_TIMESTAMP
} ColumnKind;

typedef struct RequiredColumn
{
	const char *table;
	const char *column;
	ColumnKind	kind;
} RequiredColumn;

static const RequiredColumn required_columns[] = {
	{FLYT_LEGACY_OBJECT, "id", COL_INTEGER},
	{FLYT_LEGACY_OBJECT, "instance_object_collection_id", COL_INTEGER},
	{FLYT_LEGACY_OBJECT, "created_at", COL_TIMESTAMP},
	{FLYT_LEGACY_COLLECTION, "id", COL_INTEGER},
	{FLYT_LEGACY_COLLECTION, "instance_object_id", COL_INTEGER},
	{FLYT_LEGACY_COLLECTION, "key", COL_TEXT},
	{FLYT_LEGACY_VALUE, "instance_object_id", COL_INTEGER},
	{FLYT_LEGACY_VALUE, "key", COL_TEXT},
	{FLYT_LEGACY_VALUE, "value", COL_TEXT},
};

static const char *const required_tables[] = {
	FLYT_LEGACY_OBJECT, FLYT_LEGACY_COLLECTION, FLYT_LEGACY_VALUE
};

static const char *const staging_tables[] = {
	"flyt_import_tree", "flyt_import_collection", "flyt_import_object"
};

/*
 * Runs one SQL statement with parameters and returns SPI's result code;
 * any failure is an error.  SPI leaves its own procedure context current
 * after each statement, which lives as long as the whole call: switch back
 * to the batch's context, so that what a batch builds goes with it.
 */
static int
run_sql(ImportRun *run, const char *sql, int nargs, Oid *types,
		Datum *values, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	MemoryContextSwitchTo(run->batch_cxt);
	if (rc < 0)
		elog(ERROR, "flyt_import_legacy: SPI_execute_with_args returned %s",
			 SPI_result_code_string(rc));
	return rc;
}

/* The single int8 a query returned (0 when it is NULL); frees the result. */
static int64
run_int8(ImportRun *run, const char *sql, int nargs, Oid *types, Datum *values)
{
	bool		isnull = true;
	int64		result = 0;

	run_sql(run, sql, nargs, types, values, NULL);
	if (SPI_processed == 1 && SPI_tuptable != NULL)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			result = DatumGetInt64(d);
	}
	SPI_freetuptable(SPI_tuptable);
	return result;
}

static void
report_progress(ImportRun *run, const char *what)
{
	char		activity[160];

	if (what != NULL)
		snprintf(activity, sizeof(activity), "flyt_import_legacy: %s", what);
	else
		snprintf(activity, sizeof(activity),
				 "flyt_import_legacy: " INT64_FORMAT " of " INT64_FORMAT " roots",
				 run->roots_seen, run->roots_total);
	pgstat_report_activity(STATE_RUNNING, activity);
}

static bool
column_kind_matches(Oid type, ColumnKind kind)
{
	switch (kind)
	{
		case COL_INTEGER:
			return type == INT8OID || type == INT4OID || type == INT2OID;
		case COL_TEXT:
			return type == TEXTOID || type == VARCHAROID;
		case COL_TIMESTAMP:
			return type == TIMESTAMPOID;
	}
	return false;
}

static const char *
column_kind_name(ColumnKind kind)
{
	switch (kind)
	{
		case COL_INTEGER:
			return "bigint";
		case COL_TEXT:
			return "text or character varying";
		case COL_TIMESTAMP:
			return "timestamp without time zone";
	}
	return "?";
}

/* A relation the import can SELECT from, or InvalidOid. */
static Oid
source_relation(Oid nsp, const char *name, bool sequence_too)
{
	Oid			relid = get_relname_relid(name, nsp);
	char		kind;

	if (!OidIsValid(relid))
		return InvalidOid;
	kind = get_rel_relkind(relid);
	if (kind == RELKIND_RELATION || kind == RELKIND_PARTITIONED_TABLE ||
		kind == RELKIND_FOREIGN_TABLE || kind == RELKIND_VIEW || kind == RELKIND_MATVIEW ||
		(sequence_too && kind == RELKIND_SEQUENCE))
		return relid;
	return InvalidOid;
}

/*
 * Checks that the source schema holds the Java service's tables with the
 * columns the import reads, and finds the sequence.  Names everything that
 * is missing or of the wrong type at once.
 */
static void
validate_source(ImportRun *run)
{
	Oid			nsp = get_namespace_oid(run->schema, true);
	Oid			relids[lengthof(required_tables)];
	StringInfoData missing;
	StringInfoData wrong;
	Oid			seq;

	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_SCHEMA_NAME),
				 errmsg("source schema \"%s\" does not exist", run->schema),
				 errhint("Restore the Java service's schema with pg_dump -n and pg_restore, or create it with postgres_fdw's IMPORT FOREIGN SCHEMA (docs/cutover.md).")));

	initStringInfo(&missing);
	for (int i = 0; i < (int) lengthof(required_tables); i++)
	{
		relids[i] = source_relation(nsp, required_tables[i], false);
		if (!OidIsValid(relids[i]))
			appendStringInfo(&missing, "%s%s", missing.len > 0 ? ", " : "", required_tables[i]);
	}
	if (missing.len > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("source schema \"%s\" lacks tables of the Java service", run->schema),
				 errdetail("Missing: %s.", missing.data),
				 errhint("The schema must hold instance_object, instance_object_collection and instance_object_value_per_key as the Java service's Flyway migrations create them (tables, views or foreign tables).")));

	resetStringInfo(&missing);
	initStringInfo(&wrong);
	for (int i = 0; i < (int) lengthof(required_columns); i++)
	{
		const RequiredColumn *rc = &required_columns[i];
		Oid			relid = InvalidOid;
		AttrNumber	attnum;
		Oid			type;

		for (int t = 0; t < (int) lengthof(required_tables); t++)
			if (strcmp(required_tables[t], rc->table) == 0)
				relid = relids[t];
		attnum = get_attnum(relid, rc->column);
		if (attnum <= 0)
		{
			appendStringInfo(&missing, "%s%s.%s", missing.len > 0 ? ", " : "",
							 rc->table, rc->column);
			continue;
		}
		type = get_atttype(relid, attnum);
		if (!column_kind_matches(type, rc->kind))
			appendStringInfo(&wrong, "%s%s.%s is %s, not %s", wrong.len > 0 ? "; " : "",
							 rc->table, rc->column, format_type_be(type),
							 column_kind_name(rc->kind));
	}
	if (missing.len > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("tables in source schema \"%s\" lack columns of the Java service", run->schema),
				 errdetail("Missing: %s.", missing.data)));
	if (wrong.len > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("columns in source schema \"%s\" have types the Java service does not use", run->schema),
				 errdetail("%s.", wrong.data),
				 errhint("created_at holds UTC wall-clock time as timestamp without time zone; a foreign table must declare the columns as the Java service's tables have them.")));

	seq = source_relation(nsp, FLYT_LEGACY_SEQUENCE, true);
	run->has_sequence = OidIsValid(seq);
	if (run->has_sequence)
	{
		AttrNumber	attnum = get_attnum(seq, "last_value");

		if (attnum <= 0 || !column_kind_matches(get_atttype(seq, attnum), COL_INTEGER))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("\"%s\".%s has no column last_value of type bigint",
							run->schema, FLYT_LEGACY_SEQUENCE),
					 errhint("It must be the Java service's sequence, or a foreign table or table (last_value bigint) holding its last value (docs/cutover.md).")));
	}
}

static void
take_import_lock(ImportRun *run)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(IMPORT_LOCK_KEY)};

	run_sql(run, "SELECT pg_catalog.pg_advisory_xact_lock($1)", 1, types, values, NULL);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Moves flyt.instance's sequence so that the next id is above
 * run->continue_above; never moves it back.
 */
static void
continue_ids(ImportRun *run)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run->continue_above)};

	run_sql(run,
			"SELECT pg_catalog.setval('flyt.instance_id_seq'::pg_catalog.regclass, $1, true) "
			"FROM flyt.instance_id_seq s "
			"WHERE s.last_value OPERATOR(pg_catalog.+) CASE WHEN s.is_called THEN 1 ELSE 0 END "
			"  OPERATOR(pg_catalog.<=) $1",
			1, types, values, NULL);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * The first transaction: the run's report row, the staging tables, the
 * orphans, the id sequence.
 */
static void
prepare_import(ImportRun *run)
{
	Oid			types[3] = {INT8OID, TEXTOID, INT4OID};
	Datum		values[3];
	int64		max_id;
	int64		sequence_value = 0;
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	Oid			report_types[6] = {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		report_values[6];

	take_import_lock(run);

	/* runs that ended without finishing: their backend is gone, or it is us */
	run_sql(run,
			"UPDATE flyt.import_run r SET status = 'interrupted', finished_at = pg_catalog.now() "
			"WHERE r.status OPERATOR(pg_catalog.=) 'running' "
			"  AND (r.backend_pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() "
			"    OR NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a "
			"      WHERE a.pid OPERATOR(pg_catalog.=) r.backend_pid "
			"        AND a.backend_start OPERATOR(pg_catalog.<=) r.started_at))",
			0, NULL, NULL, NULL);

	values[0] = Int64GetDatum(0);
	values[1] = CStringGetTextDatum(run->schema);
	values[2] = Int32GetDatum(run->batch_size);
	run->run_id = run_int8(run,
						   "INSERT INTO flyt.import_run (source_schema, batch_size) "
						   "VALUES ($2, $3) RETURNING id",
						   3, types, values);
	values[0] = Int64GetDatum(run->run_id);
	run->event_detail = MemoryContextStrdup(GetMemoryChunkContext(run),
											psprintf("{\"importRun\": " INT64_FORMAT "}",
													 run->run_id));

	/* staging tables of an earlier call of this session that failed */
	for (int i = 0; i < (int) lengthof(staging_tables); i++)
	{
		Oid			ttypes[1] = {TEXTOID};
		Datum		tvalues[1] = {CStringGetTextDatum(psprintf("pg_temp.%s", staging_tables[i]))};

		if (run_int8(run, "SELECT pg_catalog.count(*) FROM pg_catalog.to_regclass($1) c WHERE c IS NOT NULL",
					 1, ttypes, tvalues) > 0)
			run_sql(run, psprintf("DROP TABLE pg_temp.%s", staging_tables[i]), 0, NULL, NULL, NULL);
	}

	/*
	 * The skeleton of the source, read once.  created_at holds UTC wall-clock
	 * time (Hibernate's jdbc.time_zone UTC).
	 */
	run_sql(run, psprintf("CREATE TEMP TABLE flyt_import_object AS "
						  "SELECT o.id::pg_catalog.int8 AS id, "
						  "  o.instance_object_collection_id::pg_catalog.int8 AS collection_id, "
						  "  o.created_at AT TIME ZONE 'UTC' AS created_at "
						  "FROM %s.%s o",
						  run->qschema, FLYT_LEGACY_OBJECT), 0, NULL, NULL, NULL);
	run_sql(run, psprintf("CREATE TEMP TABLE flyt_import_collection AS "
						  "SELECT c.id::pg_catalog.int8 AS id, "
						  "  c.instance_object_id::pg_catalog.int8 AS owner_id, "
						  "  c.\"key\"::pg_catalog.text AS key "
						  "FROM %s.%s c",
						  run->qschema, FLYT_LEGACY_COLLECTION), 0, NULL, NULL, NULL);
	run_sql(run, "CREATE INDEX ON pg_temp.flyt_import_collection (owner_id)", 0, NULL, NULL, NULL);
	run_sql(run, "ANALYZE pg_temp.flyt_import_object", 0, NULL, NULL, NULL);
	run_sql(run, "ANALYZE pg_temp.flyt_import_collection", 0, NULL, NULL, NULL);

	/* every object reachable from a root, with its root and depth */
	run_sql(run,
			"CREATE TEMP TABLE flyt_import_tree AS "
			"WITH RECURSIVE tree (object_id, root_id, collection_id, depth, created_at) AS ("
			"    SELECT o.id, o.id, NULL::pg_catalog.int8, 0, o.created_at "
			"    FROM pg_temp.flyt_import_object o WHERE o.collection_id IS NULL "
			"  UNION ALL "
			"    SELECT child.id, t.root_id, c.id, t.depth OPERATOR(pg_catalog.+) 1, NULL::pg_catalog.timestamptz "
			"    FROM tree t "
			"    JOIN pg_temp.flyt_import_collection c ON c.owner_id OPERATOR(pg_catalog.=) t.object_id "
			"    JOIN pg_temp.flyt_import_object child ON child.collection_id OPERATOR(pg_catalog.=) c.id"
			") SELECT * FROM tree",
			0, NULL, NULL, NULL);
	run_sql(run, "CREATE INDEX ON pg_temp.flyt_import_tree (root_id)", 0, NULL, NULL, NULL);
	run_sql(run, "ANALYZE pg_temp.flyt_import_tree", 0, NULL, NULL, NULL);

	/* rows that belong to no instance */
	run_sql(run,
			"INSERT INTO flyt.import_skipped (run_id, reason, source_table, source_id) "
			"SELECT $1, '" FLYT_SKIP_ORPHAN_OBJECT "', '" FLYT_LEGACY_OBJECT "', o.id "
			"FROM pg_temp.flyt_import_object o "
			"WHERE NOT EXISTS (SELECT FROM pg_temp.flyt_import_tree t "
			"  WHERE t.object_id OPERATOR(pg_catalog.=) o.id)",
			1, types, values, NULL);
	run->orphans += SPI_processed;
	run_sql(run,
			"INSERT INTO flyt.import_skipped (run_id, reason, source_table, source_id) "
			"SELECT $1, '" FLYT_SKIP_ORPHAN_COLLECTION "', '" FLYT_LEGACY_COLLECTION "', c.id "
			"FROM pg_temp.flyt_import_collection c "
			"WHERE c.owner_id IS NULL OR NOT EXISTS (SELECT FROM pg_temp.flyt_import_tree t "
			"  WHERE t.object_id OPERATOR(pg_catalog.=) c.owner_id)",
			1, types, values, NULL);
	run->orphans += SPI_processed;
	run_sql(run,
			psprintf("INSERT INTO flyt.import_skipped (run_id, reason, source_table, source_id, detail) "
					 "SELECT $1, '" FLYT_SKIP_ORPHAN_VALUE "', '" FLYT_LEGACY_VALUE "', v.id, "
					 "  pg_catalog.jsonb_build_object('values', v.n) "
					 "FROM (SELECT v.instance_object_id::pg_catalog.int8 AS id, pg_catalog.count(*) AS n "
					 "  FROM %s.%s v WHERE v.instance_object_id IS NOT NULL "
					 "  GROUP BY 1) v "
					 "WHERE NOT EXISTS (SELECT FROM pg_temp.flyt_import_tree t "
					 "  WHERE t.object_id OPERATOR(pg_catalog.=) v.id)",
					 run->qschema, FLYT_LEGACY_VALUE),
			1, types, values, NULL);
	run->orphans += SPI_processed;

	run->roots_total = run_int8(run,
								"SELECT pg_catalog.count(*) FROM pg_temp.flyt_import_tree t "
								"WHERE t.depth OPERATOR(pg_catalog.=) 0",
								0, NULL, NULL);
	max_id = run_int8(run, "SELECT pg_catalog.max(o.id) FROM pg_temp.flyt_import_object o",
					  0, NULL, NULL);
	if (run->has_sequence)
		sequence_value = run_int8(run,
								  psprintf("SELECT pg_catalog.max(s.last_value)::pg_catalog.int8 FROM %s.%s s",
										   run->qschema, FLYT_LEGACY_SEQUENCE),
								  0, NULL, NULL);
	else
		ereport(WARNING,
				(errmsg("source schema \"%s\" has no %s", run->schema, FLYT_LEGACY_SEQUENCE),
				 errdetail("New instance ids continue above the largest id in %s (" INT64_FORMAT "), not above every id the Java service handed out: instances it deleted may have had larger ids.",
						   FLYT_LEGACY_OBJECT, max_id),
				 errhint("Give the import the sequence's last value as %s.%s (last_value bigint), for example a foreign table over the old database's sequence (docs/cutover.md).",
						 run->qschema, FLYT_LEGACY_SEQUENCE)));

	/*
	 * Ids first: an instance registered while the import runs must not take
	 * an id of the source.
	 */
	run->continue_above = Max(max_id, sequence_value);
	continue_ids(run);

	report_values[0] = Int64GetDatum(run->run_id);
	report_values[1] = Int64GetDatum(run->roots_total);
	report_values[2] = Int64GetDatum(run->orphans);
	report_values[3] = Int64GetDatum(sequence_value);
	if (!run->has_sequence)
		nulls[3] = 'n';
	report_values[4] = Int64GetDatum(max_id);
	report_values[5] = Int64GetDatum(run->continue_above);
	run_sql(run,
			"UPDATE flyt.import_run SET roots_in_source = $2, rows_skipped = $3, "
			"  source_sequence_value = $4, max_source_id = $5, ids_continue_above = $6 "
			"WHERE id OPERATOR(pg_catalog.=) $1",
			6, report_types, report_values, nulls);
}

static int
compare_root_id(const void *key, const void *elem)
{
	int64		a = *(const int64 *) key;
	int64		b = ((const ImportRoot *) elem)->id;

	return (a > b) - (a < b);
}

static ImportRoot *
find_root(ImportRoot *roots, int nroots, int64 id)
{
	ImportRoot *root = bsearch(&id, roots, nroots, sizeof(ImportRoot), compare_root_id);

	if (root == NULL)
		elog(ERROR, "flyt_import_legacy: root " INT64_FORMAT " is not in the batch", id);
	return root;
}

static void
skip_root(ImportRoot *root, const char *reason, char *detail)
{
	if (root->skip == NULL)
	{
		root->skip = reason;
		root->skip_detail = detail;
	}
}

static Datum
int8_array(int64 *elems, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(elems[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Reads and builds the trees of the batch's wanted roots: one query for
 * their objects, one for their collections, one for their values.
 */
static void
build_trees(ImportRun *run, ImportRoot *roots, int nroots, int64 *wanted, int nwanted)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	objhash_hash *objects;
	collhash_hash *collections;
	NestedObject *nested;
	int			nnested = 0;
	int64	   *object_ids;
	int			nobjects;
	uint64		n;

	values[0] = int8_array(wanted, nwanted);

	/* objects, in id order: members of a collection get appended in that order */
	run_sql(run,
			"SELECT t.object_id, t.root_id, t.collection_id, t.depth "
			"FROM pg_temp.flyt_import_tree t WHERE t.root_id OPERATOR(pg_catalog.=) ANY ($1) "
			"ORDER BY t.object_id",
			1, types, values, NULL);
	n = SPI_processed;
	objects = objhash_create(run->batch_cxt, (uint32) Max(n, 16), NULL);
	nested = palloc(sizeof(NestedObject) * Max(n, 1));
	object_ids = palloc(sizeof(int64) * Max(n, 1));
	nobjects = (int) n;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		ImportRoot *root = find_root(roots, nroots,
									 DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull)));
		Datum		collection_id = SPI_getbinval(tuple, desc, 3, &isnull);
		int			depth = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
		ImportObject *obj;
		bool		found;
		json_t	   *object = json_object();

		obj = objhash_insert(objects, id, &found);
		obj->values = json_object();
		obj->collections = json_object();
		obj->root = (int) (root - roots);
		json_object_set_new(object, "valuePerKey", obj->values);
		json_object_set_new(object, "objectCollectionPerKey", obj->collections);
		object_ids[i] = id;
		root->objects++;
		root->max_depth = Max(root->max_depth, depth);
		if (depth == 0)
			root->object = object;
		else
		{
			nested[nnested].collection_id = DatumGetInt64(collection_id);
			nested[nnested].object = object;
			nnested++;
		}
	}
	SPI_freetuptable(SPI_tuptable);

	/* collections, empty ones too, each a key of its owner's map */
	run_sql(run,
			"SELECT c.id, c.owner_id, c.key "
			"FROM pg_temp.flyt_import_tree t "
			"JOIN pg_temp.flyt_import_collection c ON c.owner_id OPERATOR(pg_catalog.=) t.object_id "
			"WHERE t.root_id OPERATOR(pg_catalog.=) ANY ($1) "
			"ORDER BY c.id",
			1, types, values, NULL);
	n = SPI_processed;
	collections = collhash_create(run->batch_cxt, (uint32) Max(n, 16), NULL);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		ImportObject *owner = objhash_lookup(objects,
											 DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull)));
		Datum		key = SPI_getbinval(tuple, desc, 3, &isnull);
		ImportRoot *root;
		char	   *k;
		ImportCollection *coll;
		bool		found;

		if (owner == NULL)
			elog(ERROR, "flyt_import_legacy: owner of collection " INT64_FORMAT " is not in the batch", id);
		root = &roots[owner->root];
		root->collections++;
		if (isnull)
		{
			skip_root(root, FLYT_SKIP_COLLECTION_WITHOUT_KEY,
					  psprintf("{\"collection\": " INT64_FORMAT "}", id));
			continue;
		}
		k = TextDatumGetCString(key);
		if (json_object_get(owner->collections, k) != NULL)
		{
			skip_root(root, FLYT_SKIP_DUPLICATE_COLLECTION_KEY,
					  psprintf("{\"collection\": " INT64_FORMAT "}", id));
			continue;
		}
		coll = collhash_insert(collections, id, &found);
		coll->members = json_array();
		json_object_set_new(owner->collections, k, coll->members);
	}
	SPI_freetuptable(SPI_tuptable);

	for (int i = 0; i < nnested; i++)
	{
		ImportCollection *coll = collhash_lookup(collections, nested[i].collection_id);

		/* NULL only where the root is skipped for its collection */
		if (coll != NULL)
			json_array_append_new(coll->members, nested[i].object);
	}

	/* values, NULL ones too, by instance_object_value_per_key's primary key */
	values[0] = int8_array(object_ids, nobjects);
	run_sql(run,
			psprintf("SELECT v.instance_object_id::pg_catalog.int8, v.\"key\"::pg_catalog.text, "
					 "  v.value::pg_catalog.text "
					 "FROM %s.%s v WHERE v.instance_object_id OPERATOR(pg_catalog.=) ANY ($1)",
					 run->qschema, FLYT_LEGACY_VALUE),
			1, types, values, NULL);
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		ImportObject *obj = objhash_lookup(objects, id);
		Datum		key = SPI_getbinval(tuple, desc, 2, &isnull);
		bool		key_null = isnull;
		Datum		value = SPI_getbinval(tuple, desc, 3, &isnull);
		json_t	   *v;

		if (obj == NULL)
			elog(ERROR, "flyt_import_legacy: object " INT64_FORMAT " of a value is not in the batch", id);
		roots[obj->root].values++;
		if (key_null)
		{
			/* the primary key forbids it; a view or foreign table might not */
			skip_root(&roots[obj->root], FLYT_SKIP_VALUE_WITHOUT_KEY,
					  psprintf("{\"object\": " INT64_FORMAT "}", id));
			continue;
		}
		if (isnull)
			v = json_null();
		else
		{
			char	   *s = TextDatumGetCString(value);

			v = json_stringn(s, strlen(s));
			if (v == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
						 errmsg("a value of object " INT64_FORMAT " is not valid UTF-8", id)));
		}
		json_object_set_new(obj->values, TextDatumGetCString(key), v);
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Imports the next batch of roots after run->last_root; returns how many
 * roots it looked at (0: none left).
 */
static int
import_batch(ImportRun *run)
{
	Oid			types[4];
	Datum		values[4];
	ImportRoot *roots;
	int			nroots;
	int64	   *wanted;
	int			nwanted = 0;
	int64	   *ids;
	Datum	   *payloads;
	Datum	   *created;
	int			nimport = 0;
	Datum	   *skip_reasons;
	Datum	   *skip_details;
	bool	   *skip_nulls;
	int64	   *skip_ids;
	int			nskip = 0;
	int64		already = 0;
	int64		objects = 0;
	int64		collections = 0;
	int64		nvalues = 0;

	take_import_lock(run);

	types[0] = INT8OID;
	types[1] = INT4OID;
	values[0] = Int64GetDatum(run->last_root);
	values[1] = Int32GetDatum(run->batch_size);
	run_sql(run,
			"SELECT t.root_id, t.created_at, "
			"  EXISTS (SELECT FROM flyt.instance_event e WHERE e.instance_id OPERATOR(pg_catalog.=) t.root_id "
			"    AND e.event_type OPERATOR(pg_catalog.=) 'IMPORTED'), "
			"  EXISTS (SELECT FROM flyt.instance i WHERE i.id OPERATOR(pg_catalog.=) t.root_id) "
			"  OR EXISTS (SELECT FROM flyt.instance_event e WHERE e.instance_id OPERATOR(pg_catalog.=) t.root_id) "
			"FROM pg_temp.flyt_import_tree t "
			"WHERE t.depth OPERATOR(pg_catalog.=) 0 AND t.root_id OPERATOR(pg_catalog.>) $1 "
			"ORDER BY t.root_id LIMIT $2",
			2, types, values, NULL);
	nroots = (int) SPI_processed;
	if (nroots == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return 0;
	}
	roots = palloc0(sizeof(ImportRoot) * nroots);
	wanted = palloc(sizeof(int64) * nroots);
	for (int i = 0; i < nroots; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		created_null;
		ImportRoot *root = &roots[i];

		root->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		root->created_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 2, &created_null));
		if (DatumGetBool(SPI_getbinval(tuple, desc, 3, &isnull)))
		{
			root->already = true;
			already++;
		}
		else if (DatumGetBool(SPI_getbinval(tuple, desc, 4, &isnull)))
			skip_root(root, FLYT_SKIP_ID_IN_USE, NULL);
		else if (created_null)
			skip_root(root, FLYT_SKIP_NO_CREATED_AT, NULL);
		else
		{
			root->wanted = true;
			wanted[nwanted++] = root->id;
		}
	}
	SPI_freetuptable(SPI_tuptable);
	run->last_root = roots[nroots - 1].id;

	if (nwanted > 0)
		build_trees(run, roots, nroots, wanted, nwanted);

	ids = palloc(sizeof(int64) * nroots);
	payloads = palloc(sizeof(Datum) * nroots);
	created = palloc(sizeof(Datum) * nroots);
	skip_reasons = palloc(sizeof(Datum) * nroots);
	skip_details = palloc(sizeof(Datum) * nroots);
	skip_nulls = palloc(sizeof(bool) * nroots);
	skip_ids = palloc(sizeof(int64) * nroots);
	for (int i = 0; i < nroots; i++)
	{
		ImportRoot *root = &roots[i];

		if (root->wanted && root->skip == NULL)
		{
			size_t		bytes;

			/* depth 0 is the root, the wire's level 1 */
			if (root->max_depth >= FLYT_MAX_INSTANCE_DEPTH)
				skip_root(root, FLYT_SKIP_TOO_DEEP,
						  psprintf("{\"depth\": %d, \"limit\": %d}", root->max_depth + 1,
								   FLYT_MAX_INSTANCE_DEPTH));
			else if ((bytes = json_dumpb(root->object, NULL, 0, JSON_COMPACT)) >
					 (size_t) flyt_max_instance_bytes)
				skip_root(root, FLYT_SKIP_TOO_LARGE,
						  psprintf("{\"bytes\": %zu, \"limit\": %d}", bytes, flyt_max_instance_bytes));
			else
			{
				ids[nimport] = root->id;
				payloads[nimport] = JsonbPGetDatum(flyt_json_to_jsonb(root->object));
				created[nimport] = TimestampTzGetDatum(root->created_at);
				nimport++;
				objects += root->objects;
				collections += root->collections;
				nvalues += root->values;
			}
		}
		if (root->skip != NULL)
		{
			skip_reasons[nskip] = CStringGetTextDatum(root->skip);
			skip_nulls[nskip] = root->skip_detail == NULL;
			skip_details[nskip] = root->skip_detail ? CStringGetTextDatum(root->skip_detail) : (Datum) 0;
			skip_ids[nskip] = root->id;
			nskip++;
		}
	}

	if (nimport > 0)
	{
		int			dims[1] = {nimport};
		int			lbs[1] = {1};

		types[0] = INT8ARRAYOID;
		types[1] = JSONBARRAYOID;
		types[2] = TIMESTAMPTZARRAYOID;
		values[0] = int8_array(ids, nimport);
		values[1] = PointerGetDatum(construct_md_array(payloads, NULL, 1, dims, lbs, JSONBOID,
													   -1, false, TYPALIGN_INT));
		values[2] = PointerGetDatum(construct_array(created, nimport, TIMESTAMPTZOID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		run_sql(run,
				"INSERT INTO flyt.instance (id, payload, created_at) OVERRIDING SYSTEM VALUE "
				"SELECT u.id, u.payload, u.created_at "
				"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) "
				"  AS u(id, payload, created_at)",
				3, types, values, NULL);
		if (SPI_processed != (uint64) nimport)
			elog(ERROR, "flyt_import_legacy: inserted " UINT64_FORMAT " instances, not %d",
				 SPI_processed, nimport);

		/* new ids, checked to have no history: each starts at version 1 */
		types[1] = TEXTOID;
		types[2] = JSONBOID;
		values[1] = CStringGetTextDatum(run->requested_by);
		values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(run->event_detail));
		run_sql(run,
				"INSERT INTO flyt.instance_event (instance_id, version, event_type, requested_by, detail) "
				"SELECT u.id, 1, 'IMPORTED', $2, $3 FROM pg_catalog.unnest($1) AS u(id)",
				3, types, values, NULL);
	}

	if (nskip > 0)
	{
		int			dims[1] = {nskip};
		int			lbs[1] = {1};

		types[0] = INT8OID;
		types[1] = TEXTARRAYOID;
		types[2] = INT8ARRAYOID;
		types[3] = TEXTARRAYOID;
		values[0] = Int64GetDatum(run->run_id);
		values[1] = PointerGetDatum(construct_array(skip_reasons, nskip, TEXTOID, -1, false, TYPALIGN_INT));
		values[2] = int8_array(skip_ids, nskip);
		values[3] = PointerGetDatum(construct_md_array(skip_details, skip_nulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
		run_sql(run,
				"INSERT INTO flyt.import_skipped (run_id, reason, source_table, source_id, detail) "
				"SELECT $1, u.reason, '" FLYT_LEGACY_OBJECT "', u.id, u.detail::pg_catalog.jsonb "
				"FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4)) "
				"  AS u(reason, id, detail)",
				4, types, values, NULL);
	}

	{
		Oid			rtypes[9] = {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID};
		Datum		rvalues[9];

		rvalues[0] = Int64GetDatum(run->run_id);
		rvalues[1] = Int64GetDatum(nimport);
		rvalues[2] = Int64GetDatum(already);
		rvalues[3] = Int64GetDatum(nskip);
		rvalues[4] = Int64GetDatum(objects);
		rvalues[5] = Int64GetDatum(collections);
		rvalues[6] = Int64GetDatum(nvalues);
		rvalues[7] = Int64GetDatum(run->last_root);
		rvalues[8] = Int64GetDatum(run->roots_seen + nroots);
		run_sql(run,
				"UPDATE flyt.import_run SET "
				"  roots_imported = roots_imported OPERATOR(pg_catalog.+) $2, "
				"  roots_already_imported = roots_already_imported OPERATOR(pg_catalog.+) $3, "
				"  roots_skipped = roots_skipped OPERATOR(pg_catalog.+) $4, "
				"  objects_imported = objects_imported OPERATOR(pg_catalog.+) $5, "
				"  collections_imported = collections_imported OPERATOR(pg_catalog.+) $6, "
				"  values_imported = values_imported OPERATOR(pg_catalog.+) $7, "
				"  last_root_id = $8, roots_done = $9 "
				"WHERE id OPERATOR(pg_catalog.=) $1",
				9, rtypes, rvalues, NULL);
	}

	run->imported += nimport;
	run->already += already;
	run->skipped += nskip;
	run->roots_seen += nroots;
	return nroots;
}

static void
finish_import(ImportRun *run)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run->run_id)};

	take_import_lock(run);
	continue_ids(run);
	run_sql(run,
			"UPDATE flyt.import_run SET status = 'succeeded', finished_at = pg_catalog.now() "
			"WHERE id OPERATOR(pg_catalog.=) $1",
			1, types, values, NULL);
	for (int i = 0; i < (int) lengthof(staging_tables); i++)
		run_sql(run, psprintf("DROP TABLE pg_temp.%s", staging_tables[i]), 0, NULL, NULL, NULL);
}

/*
 * CALL flyt_import_legacy(source_schema name, batch_size int DEFAULT 1000,
 * INOUT imported bigint DEFAULT NULL): imports the Java service's instances
 * from source_schema; imported is how many this call imported.
 */
Datum
flyt_import_legacy(PG_FUNCTION_ARGS)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	ImportRun  *run;
	Oid			instance_rel;
	TupleDesc	tupdesc;
	Datum		result[1];
	bool		result_nulls[1] = {false};
	int			rc;

	if (fcinfo->context == NULL || !IsA(fcinfo->context, CallContext) ||
		((CallContext *) fcinfo->context)->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("flyt_import_legacy cannot run inside a transaction block"),
				 errdetail("It commits after each batch of instances."),
				 errhint("CALL it on its own, not inside BEGIN ... COMMIT, a function, or a procedure with a SET clause.")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source_schema must not be null")));
	if (PG_ARGISNULL(1) || PG_GETARG_INT32(1) < 1 || PG_GETARG_INT32(1) > FLYT_IMPORT_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and %d", FLYT_IMPORT_MAX_BATCH)));

	instance_rel = get_relname_relid("instance", get_namespace_oid("flyt", false));
	if (!OidIsValid(instance_rel) || !pg_class_ownercheck(instance_rel, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to import instances"),
				 errdetail("Only a superuser or the owner of flyt.instance (the role that created the extension) may call flyt_import_legacy.")));

	rc = SPI_connect_ext(SPI_OPT_NONATOMIC);
	if (rc != SPI_OK_CONNECT)
		elog(ERROR, "flyt_import_legacy: SPI_connect failed: %s", SPI_result_code_string(rc));

	/* in SPI's procedure context, which outlives the commits */
	run = palloc0(sizeof(ImportRun));
	run->schema = pstrdup(NameStr(*PG_GETARG_NAME(0)));
	run->qschema = pstrdup(quote_identifier(run->schema));
	run->batch_size = PG_GETARG_INT32(1);
	run->requested_by = flyt_requested_by();
	run->batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "flyt_import_legacy batch",
										   ALLOCSET_DEFAULT_SIZES);

	validate_source(run);

	MemoryContextSwitchTo(run->batch_cxt);
	report_progress(run, "reading the source");
	prepare_import(run);
	SPI_commit();

	for (;;)
	{
		int			n;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(run->batch_cxt);
		MemoryContextSwitchTo(run->batch_cxt);
		n = import_batch(run);
		if (n == 0)
			break;
		report_progress(run, NULL);
		SPI_commit();
	}

	finish_import(run);
	ereport(NOTICE,
			(errmsg("imported " INT64_FORMAT " instances from schema \"%s\"", run->imported, run->schema),
			 errdetail(INT64_FORMAT " of " INT64_FORMAT " roots were imported before, " INT64_FORMAT
					   " were skipped, " INT64_FORMAT " rows belong to no instance; the report is flyt.import_run " INT64_FORMAT ".",
					   run->already, run->roots_total, run->skipped, run->orphans, run->run_id)));
	report_progress(run, NULL);

	MemoryContextSwitchTo(caller_cxt);
	result[0] = Int64GetDatum(run->imported);
	rc = SPI_finish();
	if (rc != SPI_OK_FINISH)
		elog(ERROR, "flyt_import_legacy: SPI_finish failed: %s", SPI_result_code_string(rc));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "flyt_import_legacy: the result must be a row");
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_nulls)));
}
