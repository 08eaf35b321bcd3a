/*-------------------------------------------------------------------------
 *
 * plans.c
 *	  SPI plans prepared once per backend and kept.
 *
 * Every statement flyt_instance runs is a fully schema-qualified query
 * prepared on first use and kept with SPI_keepplan, so a call costs the
 * execution of its plans and nothing else: no parsing, no planning, no
 * catalog lookups.  The plan cache revalidates a kept plan by itself when
 * the tables change (for example DROP and CREATE EXTENSION).  The plans are
 * generic: planned once, not per call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "plans.h"

/* Returns the plan in *cache, preparing and keeping it on first use. */
SPIPlanPtr
flyt_plan(SPIPlanPtr *cache, const char *sql, int nargs, const Oid *argtypes)
{
	SPIPlanPtr	plan;

	if (*cache != NULL)
		return *cache;
	/*
	 * Generic plans: every statement is a key lookup or a small scan whose
	 * best plan does not depend on the values, and a custom plan would be
	 * planned on every call.
	 */
	plan = SPI_prepare_cursor(sql, nargs, (Oid *) argtypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "flyt_instance: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "flyt_instance: SPI_keepplan failed");
	*cache = plan;
	return plan;
}

/* SPI_connect that reports failure. */
void
flyt_spi_connect(void)
{
	int			rc = SPI_connect();

	if (rc != SPI_OK_CONNECT)
		elog(ERROR, "flyt_instance: SPI_connect failed: %s", SPI_result_code_string(rc));
}

/* SPI_finish that reports failure. */
void
flyt_spi_finish(void)
{
	int			rc = SPI_finish();

	if (rc != SPI_OK_FINISH)
		elog(ERROR, "flyt_instance: SPI_finish failed: %s", SPI_result_code_string(rc));
}

/*
 * SPI_finish for a function that returns a pass-by-reference value built
 * while connected.  Everything palloc'd while connected lives in the SPI
 * procedure context, which SPI_finish frees: the value is copied into the
 * caller's (upper executor) context first, as PostgreSQL's own SPI users
 * do, and the copy is returned.
 */
Datum
flyt_spi_finish_datum(Datum value, bool typbyval, int typlen)
{
	value = SPI_datumTransfer(value, typbyval, typlen);
	flyt_spi_finish();
	return value;
}

/*
 * Executes a kept plan and checks that it returned the expected SPI result
 * code; returns the number of rows processed.
 */
int
flyt_execute(SPIPlanPtr plan, const Datum *values, const char *nulls,
			 bool read_only, long count, int expected)
{
	int			rc = SPI_execute_plan(plan, (Datum *) values, nulls, read_only, count);

	if (rc != expected)
		elog(ERROR, "flyt_instance: SPI_execute_plan returned %s, expected %s",
			 SPI_result_code_string(rc), SPI_result_code_string(expected));
	return (int) SPI_processed;
}

/* flyt.<sequence>, which must exist. */
static Oid
sequence_oid(const char *sequence)
{
	Oid			relid = get_relname_relid(sequence, get_namespace_oid("flyt", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sequence flyt.%s does not exist", sequence)));
	return relid;
}

/*
 * flyt_execute for statements on flyt.outbox by id.  The table swings
 * between empty and a backlog of millions, and its plans are generic and
 * kept: one planned while it was (nearly) empty, as after every drain,
 * scans it whole, which makes each batch of deleted rows cost the whole
 * backlog (the pump's scans do not go through the planner at all:
 * outbox_scan.c).  These are planned (and planned
 * again when their plan is invalidated, which happens while they run)
 * without sequential scans: by the primary key, whatever the statistics.
 */
int
flyt_execute_by_id(SPIPlanPtr plan, const Datum *values, const char *nulls,
				   bool read_only, long count, int expected)
{
	int			nest_level = NewGUCNestLevel();
	int			n;

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	n = flyt_execute(plan, values, nulls, read_only, count, expected);
	AtEOXact_GUC(true, nest_level);
	return n;
}

/*
 * The next n values of one of the extension's sequences without a query:
 * nextval() itself (with its permission check) on flyt.<sequence>, looked
 * up once.
 */
void
flyt_next_values(const char *sequence, int n, Datum *values)
{
	Oid			relid = sequence_oid(sequence);

	for (int i = 0; i < n; i++)
		values[i] = Int64GetDatum(nextval_internal(relid, true));
}

/*
 * The transactions, other than this one, that have taken a value from one
 * of the extension's sequences and are still running: nextval takes
 * RowExclusiveLock on the sequence and keeps it until the transaction ends
 * (so do currval, setval and pg_sequence_last_value, which are counted
 * too).  ShareLock conflicts with that but not with the AccessShareLock of
 * a plain SELECT from the sequence, such as pg_dump's.  Returns a palloc'd
 * array of n entries.
 */
VirtualTransactionId *
flyt_sequence_holders(const char *sequence, int *n)
{
	LOCKTAG		tag;

	SET_LOCKTAG_RELATION(tag, MyDatabaseId, sequence_oid(sequence));
	return GetLockConflicts(&tag, ShareLock, n);
}

/*
 * The last value one of the extension's sequences handed out, to anyone
 * (pg_sequence_last_value: not this session's, and whether or not the
 * transaction that took it has committed); 0 before the first.
 */
int64
flyt_sequence_last_value(const char *sequence)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		last;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(sequence_oid(sequence));
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	return fcinfo->isnull ? 0 : DatumGetInt64(last);
}

/* The next value of one of the extension's sequences (flyt_next_values). */
int64
flyt_next_value(const char *sequence)
{
	Datum		value;

	flyt_next_values(sequence, 1, &value);
	return DatumGetInt64(value);
}

/*
 * A one-dimensional array of n elements of type elemtype, for the
 * statements that write a set of rows at once; nulls may be NULL (none).
 */
Datum
flyt_array(Oid elemtype, Datum *elems, const bool *nulls, int n)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, (bool *) nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}
