/*-------------------------------------------------------------------------
 *
 * cleanup.c
 *	  Retention cleanup of instances and their history.
 *
 * One batch is two set-based statements: the first locks the oldest
 * expired instances (skipping rows a concurrent retry holds); the second
 * deletes them by ctid and their history, records one DELETED event each,
 * and queues instance-deleted for each one that has flow headers.  A third
 * purges the history of instances whose DELETED row has outlived one more
 * retention window.
 *
 * Expired instances without flow headers (imported from the Java service)
 * are first asked of fint-flyt-history-service, as the original did before
 * every deletion (flowreq.c): each batch asks for up to ASK_PER_BATCH of
 * them and records when in flyt.flow_headers_request (a table of its own,
 * so that asking locks no instance row the worker needs to store the
 * reply, however long the asking transaction stays open).  The worker stores a
 * reply on the instance, which is then deleted with its instance-deleted;
 * one asked for longer than flow_headers_timeout ago without headers
 * (history-service has none, or no answer) is deleted without an event,
 * as before.  Until then it is held back; the worker runs the cleanup again
 * once that time has passed.  When they cannot be asked for at all (Kafka
 * is off, or no worker runs) such instances are deleted without an event
 * at once: retention is kept either way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "pgstat.h"
#include "utils/backend_status.h"
#include "utils/timestamp.h"

#include "cleanup.h"
#include "flowreq.h"
#include "guc.h"
#include "history.h"
#include "outbox.h"
#include "plans.h"
#include "shared.h"
#include "store.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_cleanup);

static SPIPlanPtr victims_plan = NULL;
static SPIPlanPtr delete_plan = NULL;
static SPIPlanPtr purge_plan = NULL;
static SPIPlanPtr recover_plan = NULL;
static SPIPlanPtr start_plan = NULL;
static SPIPlanPtr progress_plan = NULL;
static SPIPlanPtr trim_plan = NULL;
static SPIPlanPtr unasked_plan = NULL;
static SPIPlanPtr asked_plan = NULL;
static SPIPlanPtr held_plan = NULL;

/* work_mem of a batch at least (kB): see flyt_cleanup_batch. */
#define BATCH_WORK_MEM_KB 16384

/* Expired instances without flow headers asked for per batch, at most. */
#define ASK_PER_BATCH (FLYT_FLOW_REQUEST_SLOTS / 2)

/*
 * Asks history-service for the flow headers of up to ASK_PER_BATCH expired
 * instances that have none and were not asked for yet; records when.
 */
static void
ask_for_missing_headers(TimestampTz cutoff)
{
	static const Oid unasked_types[] = {TIMESTAMPTZOID, INT4OID};
	static const Oid asked_types[] = {INT8ARRAYOID};
	Datum		values[2];
	int64	   *ids;
	Datum	   *elems;
	int			n;
	int			taken;

	flyt_plan(&unasked_plan,
			  "SELECT i.id FROM flyt.instance i"
			  " WHERE i.created_at OPERATOR(pg_catalog.<) $1 AND i.flow_headers IS NULL"
			  "   AND NOT EXISTS (SELECT FROM flyt.flow_headers_request r"
			  "                   WHERE r.instance_id OPERATOR(pg_catalog.=) i.id)"
			  " ORDER BY i.created_at LIMIT $2",
			  2, unasked_types);
	values[0] = TimestampTzGetDatum(cutoff);
	values[1] = Int32GetDatum(ASK_PER_BATCH);
	n = (int) flyt_execute(unasked_plan, values, NULL, true, 0, SPI_OK_SELECT);
	if (n == 0)
		return;
	ids = palloc(sizeof(int64) * n);
	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		elems[i] = Int64GetDatum(ids[i]);
	}
	SPI_freetuptable(SPI_tuptable);
	taken = flyt_flow_headers_request_nowait(ids, n);
	pfree(ids);
	if (taken == 0)
	{
		pfree(elems);
		return;					/* the worker cannot ask now: ask again next time */
	}

	flyt_plan(&asked_plan,
			  "INSERT INTO flyt.flow_headers_request (instance_id, requested_at)"
			  " SELECT id, pg_catalog.now() FROM pg_catalog.unnest($1) AS id"
			  " ON CONFLICT (instance_id) DO UPDATE SET requested_at = EXCLUDED.requested_at",
			  1, asked_types);
	values[0] = PointerGetDatum(construct_array(elems, taken, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	flyt_execute(asked_plan, values, NULL, false, 0, SPI_OK_INSERT);
	pfree(elems);
	pfree(DatumGetPointer(values[0]));
}

/* now() minus flyt_instance.time_to_keep_instance_in_days. */
TimestampTz
flyt_cleanup_cutoff(void)
{
	return GetCurrentTransactionStartTimestamp() -
		(TimestampTz) flyt_time_to_keep_instance_in_days * USECS_PER_DAY;
}

/*
 * Settings of a batch's statements, restored by AtEOXact_GUC(true, the
 * nest level returned).  No JIT: its statements are planned once per
 * backend, so JIT would compile their expressions again on every batch, at
 * a cost above what a batch of plain row work saves by it.  At least
 * BATCH_WORK_MEM_KB of work_mem: the deleted instances' flow headers (about
 * half a kilobyte each) pass through a CTE and a sort, which otherwise go
 * to temporary files with a default batch and the default work_mem.
 */
static int
batch_settings(void)
{
	int			save_nestlevel = NewGUCNestLevel();

	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (work_mem < BATCH_WORK_MEM_KB)
		(void) set_config_option("work_mem", CppAsString2(BATCH_WORK_MEM_KB), PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return save_nestlevel;
}

/*
 * Deletes the history of up to max_instances (all when < 0) deleted
 * instances whose DELETED row is older than cutoff; returns the number of
 * rows deleted.  The caller is connected to SPI.
 */
static int64
purge_history(TimestampTz cutoff, int64 max_instances)
{
	static const Oid purge_types[] = {TIMESTAMPTZOID, INT8OID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	flyt_plan(&purge_plan,
			  "DELETE FROM flyt.instance_event e USING ("
			  "  SELECT DISTINCT instance_id FROM ("
			  "    SELECT instance_id FROM flyt.instance_event"
			  "    WHERE event_type OPERATOR(pg_catalog.=) 'DELETED'"
			  "      AND occurred_at OPERATOR(pg_catalog.<) $1"
			  "    ORDER BY occurred_at LIMIT $2) expired"
			  ") old "
			  "WHERE e.instance_id OPERATOR(pg_catalog.=) old.instance_id"
			  "  AND NOT EXISTS (SELECT FROM flyt.instance i"
			  "                  WHERE i.id OPERATOR(pg_catalog.=) e.instance_id)",
			  2, purge_types);
	values[0] = TimestampTzGetDatum(cutoff);
	values[1] = Int64GetDatum(max_instances);
	if (max_instances < 0)
		nulls[1] = 'n';
	return flyt_execute(purge_plan, values, nulls, false, 0, SPI_OK_DELETE);
}

/*
 * Deletes at most max_rows (all when max_rows < 0) instances created before
 * cutoff and not before from (DT_NOBEGIN: any), oldest first, and the
 * history of up to purge_max (all when < 0, none when 0) instances whose
 * DELETED row is older than cutoff.  The caller is connected to SPI.
 */
static void
flyt_cleanup_batch(TimestampTz cutoff, TimestampTz from, int64 max_rows, int64 purge_max,
				   FlytCleanupResult *result)
{
	static const Oid victims_types[] = {TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID, BOOLOID, TIMESTAMPTZOID};
	static const Oid delete_types[] = {TIDARRAYOID, UUIDARRAYOID, TEXTOID, TEXTOID};
	static const Oid held_types[] = {TIMESTAMPTZOID, TIMESTAMPTZOID};
	SPIPlanPtr	plan;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int			victims;
	bool		can_ask = flyt_flow_can_ask();
	TimestampTz asked_before = GetCurrentTimestamp() - (TimestampTz) flyt_flow_headers_timeout_ms * 1000;
	int			save_nestlevel;

	save_nestlevel = batch_settings();

	if (can_ask)
		ask_for_missing_headers(cutoff);

	/*
	 * The batch's victims, locked, skipping rows another transaction holds
	 * (a retry in flight holds its instance until it ends).  They are
	 * deleted by the next statement, whose snapshot (in READ COMMITTED, as
	 * the worker runs; in REPEATABLE READ and SERIALIZABLE every statement
	 * has the transaction's) is taken after the locks: an event that a
	 * retry committed before its instance was locked is visible to it, so
	 * it is deleted with the rest of the history and the DELETED row takes
	 * the version after it; and every victim is seen at the version its
	 * lock returned, so deleting them by ctid (a TID scan, not a probe of
	 * the primary key per row) deletes them all.
	 */
	plan = flyt_plan(&victims_plan,
					 "SELECT ctid, created_at FROM flyt.instance"
					 " WHERE created_at OPERATOR(pg_catalog.<) $1 AND created_at OPERATOR(pg_catalog.>=) $5"
					 "   AND (flow_headers IS NOT NULL OR NOT $4 OR EXISTS ("
					 "        SELECT FROM flyt.flow_headers_request r"
					 "        WHERE r.instance_id OPERATOR(pg_catalog.=) instance.id"
					 "          AND r.requested_at OPERATOR(pg_catalog.<) $3))"
					 " ORDER BY created_at LIMIT $2"
					 " FOR UPDATE SKIP LOCKED",
					 5, victims_types);
	values[0] = TimestampTzGetDatum(cutoff);
	if (max_rows >= 0)
		values[1] = Int64GetDatum(max_rows);
	else
		nulls[1] = 'n';
	values[2] = TimestampTzGetDatum(asked_before);
	values[3] = BoolGetDatum(can_ask);
	values[4] = TimestampTzGetDatum(from);
	victims = flyt_execute(plan, values, nulls, false, 0, SPI_OK_SELECT);

	result->deleted = result->deleted_without_event = 0;
	result->last_created_at = DT_NOBEGIN;
	if (victims > 0)
	{
		/*
		 * The arrays, which may be large, in a context of their own, freed
		 * with the result sets once the batch is done (an SPI call returns
		 * in SPI's own context: what follows the first one is not in it).
		 */
		MemoryContext batch_context = AllocSetContextCreate(CurrentMemoryContext,
															"flyt_instance cleanup batch",
															ALLOCSET_DEFAULT_SIZES);
		MemoryContext old_context = MemoryContextSwitchTo(batch_context);
		Datum	   *elems = palloc(sizeof(Datum) * victims);
		pg_uuid_t  *event_ids = palloc(sizeof(pg_uuid_t) * victims);

		for (int i = 0; i < victims; i++)
			elems[i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		values[0] = flyt_array(TIDOID, elems, NULL, victims);
		result->last_created_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[victims - 1],
																	SPI_tuptable->tupdesc, 2, &isnull));
		SPI_freetuptable(SPI_tuptable);
		/* the instance-deleted messages' flyt.event-id, drawn at once */
		flyt_new_uuids(event_ids, victims);
		for (int i = 0; i < victims; i++)
			elems[i] = UUIDPGetDatum(&event_ids[i]);
		values[1] = flyt_array(UUIDOID, elems, NULL, victims);
		values[2] = CStringGetTextDatum(flyt_requested_by());
		values[3] = CStringGetTextDatum(flyt_topic_name(FLYT_EVENT_DELETED));

		plan = flyt_plan(&delete_plan,
						 "WITH deleted AS ("
						 "  DELETE FROM flyt.instance i"
						 "  WHERE i.ctid OPERATOR(pg_catalog.=) ANY ($1)"
						 "  RETURNING i.id, i.flow_headers"
						 "), history AS ("
						 "  DELETE FROM flyt.instance_event e"
						 "  WHERE e.instance_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT id FROM deleted))"
						 "  RETURNING e.instance_id, e.version"
						 "), asked AS ("
						 "  DELETE FROM flyt.flow_headers_request r"
						 "  WHERE EXISTS (SELECT FROM flyt.flow_headers_request)"
						 "    AND r.instance_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT id FROM deleted))"
						 "), last_version AS ("
						 "  SELECT instance_id, pg_catalog.max(version) AS version FROM history GROUP BY instance_id"
						 "), events AS ("
						 "  INSERT INTO flyt.instance_event (instance_id, version, event_type, requested_by)"
						 "  SELECT d.id, COALESCE(l.version, 0) OPERATOR(pg_catalog.+) 1, 'DELETED', $3"
						 "  FROM deleted d LEFT JOIN last_version l ON l.instance_id OPERATOR(pg_catalog.=) d.id"
						 "), queued AS ("
						 "  INSERT INTO flyt.outbox (id, event_name, topic, key, headers, value)"
						 "  SELECT q.id, '" FLYT_EVENT_DELETED "', $4, q.instance_id::pg_catalog.text,"
						 "    pg_catalog.jsonb_build_object("
						 "      '" FLYT_HEADER_FLOW_HEADERS "', flyt.wire_flow_headers(q.flow_headers),"
						 "      '" FLYT_HEADER_EVENT_ID "', ($2)[q.n]::pg_catalog.text),"
						 "    NULL"
						 "  FROM (SELECT pg_catalog.nextval('flyt.outbox_id_seq'::pg_catalog.regclass) AS id,"
						 "               d.id AS instance_id, d.flow_headers,"
						 "               pg_catalog.row_number() OVER (ORDER BY d.id) AS n"
						 "        FROM deleted d WHERE d.flow_headers IS NOT NULL ORDER BY d.id) q"
						 "  RETURNING 1"
						 ") "
						 "SELECT (SELECT pg_catalog.count(*) FROM deleted),"
						 "       (SELECT pg_catalog.count(*) FROM queued)",
						 4, delete_types);
		flyt_execute(plan, values, NULL, false, 0, SPI_OK_SELECT);
		result->deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		result->deleted_without_event = result->deleted -
			DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		SPI_freetuptable(SPI_tuptable);
		MemoryContextSwitchTo(old_context);
		MemoryContextDelete(batch_context);
		if (result->deleted != victims)
			elog(ERROR, "flyt_instance: a cleanup batch locked %d instances but deleted " INT64_FORMAT,
				 victims, result->deleted);
	}

	result->history_purged = purge_max != 0 ? purge_history(cutoff, purge_max) : 0;

	/*
	 * Held back: expired without flow headers, and either asked for less
	 * than the timeout ago or not asked for yet (no request slot was free:
	 * the next run asks).  Nothing is held back when nobody can be asked.
	 */
	result->held_back = 0;
	if (can_ask)
	{
		plan = flyt_plan(&held_plan,
						 "SELECT pg_catalog.count(*) FROM flyt.instance i"
						 " LEFT JOIN flyt.flow_headers_request r ON r.instance_id OPERATOR(pg_catalog.=) i.id"
						 " WHERE i.created_at OPERATOR(pg_catalog.<) $1 AND i.flow_headers IS NULL"
						 "   AND (r.requested_at IS NULL OR r.requested_at OPERATOR(pg_catalog.>=) $2)",
						 2, held_types);
		values[0] = TimestampTzGetDatum(cutoff);
		values[1] = TimestampTzGetDatum(asked_before);
		flyt_execute(plan, values, NULL, true, 1, SPI_OK_SELECT);
		result->held_back = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
	}

	AtEOXact_GUC(true, save_nestlevel);

	flyt_count(FLYT_COUNT_DELETED, result->deleted);
	if (result->deleted > result->deleted_without_event)
		flyt_wake_worker_at_commit();
}

/*
 * flyt_cleanup(older_than interval DEFAULT NULL, max_rows integer DEFAULT
 * NULL) → bigint: the number of instances deleted.
 */
Datum
flyt_cleanup(PG_FUNCTION_ARGS)
{
	TimestampTz cutoff;
	int64		max_rows = -1;
	int64		deleted = 0;
	FlytCleanupResult result;

	if (PG_ARGISNULL(0))
		cutoff = flyt_cleanup_cutoff();
	else
	{
		Interval   *older_than = PG_GETARG_INTERVAL_P(0);
		Interval	zero = {0};

		if (DatumGetBool(DirectFunctionCall2(interval_lt, IntervalPGetDatum(older_than),
											 IntervalPGetDatum(&zero))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("older_than must not be negative")));
		cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
														 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
														 IntervalPGetDatum(older_than)));
	}
	if (!PG_ARGISNULL(1))
	{
		max_rows = PG_GETARG_INT32(1);
		if (max_rows <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_rows must be positive"),
					 errhint("Pass NULL to delete every expired instance.")));
	}

	flyt_spi_connect();
	if (max_rows > 0)
	{
		flyt_cleanup_batch(cutoff, DT_NOBEGIN, max_rows, max_rows, &result);
		deleted = result.deleted;
	}
	else
	{
		/*
		 * All of them, in batches (what one holds in memory is bounded),
		 * each going on from where the last one ended: in this one
		 * transaction the index entries of the rows deleted so far stay,
		 * and a batch from the start would walk them all again.  Rows
		 * skipped because another transaction held them stay, as they
		 * would in one statement.  Then the history whose window passed,
		 * all of it.
		 */
		TimestampTz from = DT_NOBEGIN;
		int			save_nestlevel;

		do
		{
			CHECK_FOR_INTERRUPTS();
			flyt_cleanup_batch(cutoff, from, flyt_cleanup_batch_size, 0, &result);
			deleted += result.deleted;
			if (result.deleted > 0)
				from = result.last_created_at;
		} while (result.deleted == flyt_cleanup_batch_size);
		save_nestlevel = batch_settings();
		(void) purge_history(cutoff, -1);
		AtEOXact_GUC(true, save_nestlevel);
	}
	flyt_spi_finish();

	PG_RETURN_INT64(deleted);
}

/*
 * Marks runs that a crash left "running" as failed.  The worker calls it
 * once at start, in a transaction, connected to SPI.
 */
void
flyt_cleanup_recover(void)
{
	int			n;

	flyt_plan(&recover_plan,
			  "UPDATE flyt.cleanup_run SET status = 'failed', finished_at = pg_catalog.now(), "
			  "  error = 'the worker stopped during the run' "
			  "WHERE status OPERATOR(pg_catalog.=) 'running'",
			  0, NULL);
	n = flyt_execute(recover_plan, NULL, NULL, false, 0, SPI_OK_UPDATE);
	if (n > 0)
		ereport(LOG,
				(errmsg("flyt_instance: marked %d interrupted cleanup run(s) as failed", n)));
}

/*
 * When the next run is due: cleanup_initial_delay after the worker started,
 * then cleanup_interval after the previous run started (settings as they
 * are now, so a reload reschedules).
 */
TimestampTz
flyt_cleanup_next_at(FlytCleanupRun *run)
{
	TimestampTz next;

	if (run->run_id != 0)
		return 0;				/* a run is under way: continue it now */
	if (run->last_started_at == 0)
		return run->worker_started_at + flyt_cleanup_initial_delay_ms * 1000;
	next = run->last_started_at + flyt_cleanup_interval_ms * 1000;
	/* instances held back for their flow headers: once they may go */
	if (run->again_at != 0 && run->again_at < next)
		next = run->again_at;
	return next;
}

/* Writes the run's figures (and, when finished, its end) to its row. */
static void
record_progress(FlytCleanupRun *run, const char *status, const char *error)
{
	static const Oid argtypes[] = {INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	flyt_plan(&progress_plan,
			  "UPDATE flyt.cleanup_run SET deleted = $2, deleted_without_event = $3, status = $4, error = $5, "
			  "  finished_at = CASE WHEN $4 OPERATOR(pg_catalog.<>) 'running' THEN pg_catalog.now() END "
			  "WHERE id OPERATOR(pg_catalog.=) $1",
			  5, argtypes);
	values[0] = Int64GetDatum(run->run_id);
	values[1] = Int64GetDatum(run->deleted);
	values[2] = Int64GetDatum(run->deleted_without_event);
	values[3] = CStringGetTextDatum(status);
	if (error != NULL)
		values[4] = CStringGetTextDatum(error);
	else
		nulls[4] = 'n';
	flyt_execute(progress_plan, values, nulls, false, 0, SPI_OK_UPDATE);
}

/*
 * One step of the scheduled cleanup, in the caller's transaction (connected
 * to SPI): starts a run when none is under way, or else deletes one batch
 * of flyt_instance.cleanup_batch_size instances.  A batch smaller than that
 * ends the run.
 */
void
flyt_cleanup_step(FlytCleanupRun *run)
{
	FlytCleanupResult result;

	if (run->run_id == 0)
	{
		static const Oid argtypes[] = {TIMESTAMPTZOID};
		Datum		values[1];
		bool		isnull;

		run->cutoff = flyt_cleanup_cutoff();
		run->deleted = run->deleted_without_event = 0;
		run->last_started_at = GetCurrentTimestamp();
		flyt_plan(&start_plan,
				  "INSERT INTO flyt.cleanup_run (cutoff) VALUES ($1) RETURNING id",
				  1, argtypes);
		values[0] = TimestampTzGetDatum(run->cutoff);
		flyt_execute(start_plan, values, NULL, false, 0, SPI_OK_INSERT_RETURNING);
		run->run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

		/* keep the history of runs bounded */
		flyt_plan(&trim_plan,
				  "DELETE FROM flyt.cleanup_run WHERE id OPERATOR(pg_catalog.<=) "
				  "  (SELECT id FROM flyt.cleanup_run ORDER BY id DESC OFFSET " CppAsString2(FLYT_CLEANUP_RUNS_KEPT) " LIMIT 1)",
				  0, NULL);
		flyt_execute(trim_plan, NULL, NULL, false, 0, SPI_OK_DELETE);

		/* the row commits on its own, so a failing batch can still be recorded */
		return;
	}

	flyt_cleanup_batch(run->cutoff, DT_NOBEGIN, flyt_cleanup_batch_size, flyt_cleanup_batch_size,
					   &result);
	run->deleted += result.deleted;
	run->deleted_without_event += result.deleted_without_event;
	run->held_back = result.held_back;
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("flyt_instance cleanup run " INT64_FORMAT ": " INT64_FORMAT " instances deleted",
									run->run_id, run->deleted));

	if (result.deleted < flyt_cleanup_batch_size)
	{
		/*
		 * Held back for their flow headers: run again once the last asked
		 * may go (asked in this batch: flow_headers_timeout from now).
		 */
		run->again_at = result.held_back > 0 ?
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), flyt_flow_headers_timeout_ms + 1000) : 0;
		record_progress(run, "succeeded", NULL);
		ereport(LOG,
				(errmsg("flyt_instance: cleanup run " INT64_FORMAT " deleted " INT64_FORMAT " instances (" INT64_FORMAT " without flow headers)",
						run->run_id, run->deleted, run->deleted_without_event)));
		run->run_id = 0;
	}
	else
		record_progress(run, "running", NULL);
}

/*
 * Records that the run under way failed (in a new transaction, connected to
 * SPI, after the failed one was rolled back); the next run is scheduled as
 * usual.
 */
void
flyt_cleanup_failed(FlytCleanupRun *run, const char *error)
{
	if (run->run_id == 0)
		return;
	record_progress(run, "failed", error);
	run->run_id = 0;
}
