/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  Retrying instances: flyt_retry and flyt_retry_batch.
 *
 * A retry takes the stored flow headers of an instance, gives them a fresh
 * correlationId, queues instance-requested-for-retry with the instance as
 * value and records RETRY_REQUESTED.  An instance stored without flow
 * headers (imported from the Java service) gets them first from
 * fint-flyt-history-service, as the original always did (flowreq.c); a
 * batch asks for all it needs at once.  Cost: one primary-key lookup (which
 * also takes a KEY SHARE lock, so cleanup cannot delete the instance under
 * the retry) and two inserts, with plans prepared once per backend; the
 * message is written straight from the stored jsonb.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "flowreq.h"
#include "history.h"
#include "idhash.h"
#include "outbox.h"
#include "plans.h"
#include "retry.h"
#include "shared.h"
#include "store.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_retry);
PG_FUNCTION_INFO_V1(flyt_retry_batch);

/*
 * Queues a retry of one instance.  On FLYT_RETRY_QUEUED, *correlation_id is
 * the new correlation id.  Errors other than "not found" and "no flow
 * headers" are raised.
 */
FlytRetryOutcome
flyt_retry_instance(int64 instance_id, const char *requested_by,
					pg_uuid_t *correlation_id)
{
	Jsonb	   *payload;
	Jsonb	   *headers;
	TimestampTz created_at;
	FlytRetryOutcome outcome = FLYT_RETRY_QUEUED;

	flyt_spi_connect();
	if (!flyt_fetch_stored_instance(instance_id, true, &payload, &headers, &created_at))
		outcome = FLYT_RETRY_NOT_FOUND;
	else if (headers == NULL || !JB_ROOT_IS_OBJECT(headers))
		outcome = FLYT_RETRY_NO_FLOW_HEADERS;
	else
	{
		char	   *wire_headers;
		char	   *dto;

		flyt_new_correlation_id(correlation_id);
		/* written straight from jsonb; through jansson where only it writes them right */
		wire_headers = flyt_flow_headers_text_from_jsonb(headers, correlation_id);
		if (wire_headers == NULL)
		{
			json_t	   *json = flyt_jsonb_to_json(headers, "flow headers");

			flyt_set_correlation_id(json, correlation_id);
			wire_headers = flyt_flow_headers_text(json);
		}
		dto = flyt_instance_dto_from_jsonb(instance_id, payload, created_at);
		if (dto == NULL)
			dto = flyt_instance_dto(instance_id, flyt_jsonb_to_json(payload, "instance"), created_at);
		flyt_outbox_enqueue(FLYT_EVENT_RETRY, flyt_instance_key(instance_id), wire_headers, dto);
		flyt_append_event(instance_id, "RETRY_REQUESTED", requested_by,
						  correlation_id, NULL);
		flyt_count(FLYT_COUNT_RETRIED, 1);
	}
	flyt_spi_finish();
	return outcome;
}

/*
 * Asks history-service for the flow headers of those of ids[0..n) that
 * exist without them, all at once, and waits for the answers (flowreq.c).
 * why[i] (when why is not NULL) says what became of ids[i]'s request; ids
 * that needed none are FLYT_FLOW_OUTCOME_ANSWERED.
 */
void
flyt_retry_fetch_flow_headers(const int64 *ids, int n, FlytFlowOutcome *why)
{
	static const Oid argtypes[] = {INT8ARRAYOID};
	static SPIPlanPtr missing_plan = NULL;
	Datum	   *elems;
	Datum		values[1];
	int64	   *missing;
	FlytFlowOutcome *outcomes;
	int			nmissing;
	idhash_hash *index;

	for (int i = 0; why != NULL && i < n; i++)
		why[i] = FLYT_FLOW_OUTCOME_ANSWERED;
	if (n == 0)
		return;

	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	flyt_spi_connect();
	flyt_plan(&missing_plan,
			  "SELECT id FROM flyt.instance "
			  "WHERE id OPERATOR(pg_catalog.=) ANY ($1) AND flow_headers IS NULL",
			  1, argtypes);
	values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	nmissing = (int) flyt_execute(missing_plan, values, NULL, true, 0, SPI_OK_SELECT);
	missing = palloc(sizeof(int64) * Max(nmissing, 1));
	for (int i = 0; i < nmissing; i++)
	{
		bool		isnull;

		missing[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	flyt_spi_finish();
	if (nmissing == 0)
		return;

	/* no SPI connection, no lock of ours on these rows while waiting */
	outcomes = palloc(sizeof(FlytFlowOutcome) * nmissing);
	flyt_flow_headers_fetch(missing, nmissing, outcomes);
	if (why == NULL)
		return;
	index = idhash_create(CurrentMemoryContext, Max(nmissing, 8), NULL);
	for (int i = 0; i < nmissing; i++)
	{
		bool		found;
		IdEntry    *e = idhash_insert(index, missing[i], &found);

		e->tag = (uint32) outcomes[i];
	}
	for (int i = 0; i < n; i++)
	{
		IdEntry    *e = idhash_lookup(index, ids[i]);

		if (e != NULL)
			why[i] = (FlytFlowOutcome) e->tag;
	}
}

/*
 * flyt_retry_instance; when the instance has no flow headers, it asks
 * history-service for them and tries once more.  *why says what that
 * request came to (FLYT_FLOW_OUTCOME_ANSWERED when none was needed).  The
 * common case costs nothing extra.
 */
FlytRetryOutcome
flyt_retry_one(int64 instance_id, const char *requested_by, pg_uuid_t *correlation_id,
			   FlytFlowOutcome *why)
{
	FlytRetryOutcome outcome = flyt_retry_instance(instance_id, requested_by, correlation_id);

	*why = FLYT_FLOW_OUTCOME_ANSWERED;
	if (outcome != FLYT_RETRY_NO_FLOW_HEADERS)
		return outcome;
	flyt_flow_headers_fetch(&instance_id, 1, why);
	return flyt_retry_instance(instance_id, requested_by, correlation_id);
}

/* Raises the error of an outcome other than FLYT_RETRY_QUEUED. */
void
flyt_report_retry_outcome(FlytRetryOutcome outcome, int64 instance_id, FlytFlowOutcome why)
{
	switch (outcome)
	{
		case FLYT_RETRY_QUEUED:
			break;
		case FLYT_RETRY_NOT_FOUND:
			flyt_instance_not_found(instance_id);
			break;
		case FLYT_RETRY_NO_FLOW_HEADERS:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("instance " INT64_FORMAT " has no flow headers", instance_id),
					 errdetail("It was stored without InstanceFlowHeaders, and %s.",
							   flyt_flow_outcome_detail(why))));
			break;
	}
}

/* flyt_retry(instance_id bigint) → uuid: the new correlation id. */
Datum
flyt_retry(PG_FUNCTION_ARGS)
{
	int64		instance_id;
	pg_uuid_t  *correlation_id = palloc(sizeof(pg_uuid_t));
	FlytRetryOutcome outcome;
	FlytFlowOutcome why;

	flyt_require_argument(fcinfo, 0, "instance_id");
	instance_id = PG_GETARG_INT64(0);

	outcome = flyt_retry_one(instance_id, flyt_requested_by(), correlation_id, &why);
	flyt_report_retry_outcome(outcome, instance_id, why);

	PG_RETURN_UUID_P(correlation_id);
}

/* One id of a batch and what became of it. */
typedef struct BatchItem
{
	int64		instance_id;
	FlytRetryOutcome outcome;
	FlytFlowOutcome why;		/* of the flow headers request, if one was needed */
	pg_uuid_t	correlation_id;
	char	   *error;			/* an unexpected failure, else NULL */
} BatchItem;

typedef struct BatchRange
{
	BatchItem  *items;
	int			lo;
	int			hi;
	const char *requested_by;
} BatchRange;

static void
retry_items(void *arg)
{
	BatchRange *r = arg;

	for (int i = r->lo; i < r->hi; i++)
	{
		CHECK_FOR_INTERRUPTS();
		r->items[i].outcome = flyt_retry_instance(r->items[i].instance_id, r->requested_by,
												  &r->items[i].correlation_id);
	}
}

/*
 * Retries items[lo, hi) in one subtransaction.  When that fails, the range
 * is rolled back and split in halves, each tried the same way, down to the
 * one id that fails, which gets an "error" row.  Expected outcomes (not
 * found, no flow headers) are not errors and cost nothing of this.
 */
static void
retry_range(BatchItem *items, int lo, int hi, const char *requested_by)
{
	BatchRange	r = {items, lo, hi, requested_by};
	ErrorData  *edata = flyt_run_isolated(retry_items, &r);
	int			mid;

	if (edata == NULL)
		return;
	if (hi - lo == 1)
	{
		items[lo].error = pstrdup(edata->message);
		FreeErrorData(edata);
		return;
	}
	FreeErrorData(edata);
	mid = lo + (hi - lo) / 2;
	retry_range(items, lo, mid, requested_by);
	retry_range(items, mid, hi, requested_by);
}

/*
 * Retries each distinct id of ids[0..n) independently, in the order given,
 * writing one row per id to a materialized SRF result: (instance_id,
 * status, correlation_id, error).  A NULL (nulls[i]) is one not_found row.
 * for_http: an unexpected failure's own text goes to the server log, and
 * the row says only that it failed (HTTP callers see no internals).
 *
 * Ids go in ranges of at least MIN_RANGE, at most MAX_RANGES of them, one
 * subtransaction each: so that an unexpected failure of one id undoes that
 * id alone, without a subtransaction per id.  Each subtransaction that
 * writes takes a transaction id, and past 64 of them in one transaction the
 * per-backend cache overflows and every snapshot in the cluster gets slower
 * while it runs; a batch stays within about MAX_RANGES of them (plus a few
 * per failing id).
 */
#define MIN_RANGE 32
#define MAX_RANGES 48

void
flyt_retry_many(ReturnSetInfo *rsinfo, const Datum *ids, const bool *nulls, int n,
				bool for_http)
{
	char	   *requested_by = flyt_requested_by();
	idhash_hash *seen = idhash_create(CurrentMemoryContext, Max(n, 8), NULL);
	BatchItem  *items = palloc0(sizeof(BatchItem) * Max(n, 1));
	int			nitems = 0;
	int			null_at = -1;	/* where the NULL row goes, in order */
	int			range;

	for (int i = 0; i < n; i++)
	{
		bool		found;
		int64		id;

		if (nulls != NULL && nulls[i])
		{
			if (null_at < 0)
				null_at = nitems;
			continue;
		}
		id = DatumGetInt64(ids[i]);
		(void) idhash_insert(seen, id, &found);
		if (found)
			continue;
		items[nitems++].instance_id = id;
	}

	/* the flow headers missing anywhere in the batch, asked for at once */
	{
		int64	   *item_ids = palloc(sizeof(int64) * Max(nitems, 1));
		FlytFlowOutcome *why = palloc(sizeof(FlytFlowOutcome) * Max(nitems, 1));

		for (int i = 0; i < nitems; i++)
			item_ids[i] = items[i].instance_id;
		flyt_retry_fetch_flow_headers(item_ids, nitems, why);
		for (int i = 0; i < nitems; i++)
			items[i].why = why[i];
	}

	range = Max(MIN_RANGE, (nitems + MAX_RANGES - 1) / MAX_RANGES);
	for (int lo = 0; lo < nitems; lo += range)
		retry_range(items, lo, Min(lo + range, nitems), requested_by);

	for (int i = 0; i <= nitems; i++)
	{
		Datum		values[4];
		bool		isnull[4] = {false, false, true, true};
		BatchItem  *item;
		const char *status = NULL;
		char	   *error = NULL;

		if (i == null_at)
		{
			Datum		null_values[4] = {0, CStringGetTextDatum("not_found"), 0,
			CStringGetTextDatum("instance id is null")};
			bool		null_isnull[4] = {true, false, true, false};

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, null_values, null_isnull);
		}
		if (i == nitems)
			break;
		item = &items[i];
		if (item->error != NULL)
		{
			status = "error";
			error = item->error;
			if (for_http)
			{
				ereport(LOG,
						(errmsg("flyt_instance: the retry of instance " INT64_FORMAT " failed: %s",
								item->instance_id, item->error)));
				error = "the retry failed; the server log has the reason";
			}
		}
		else
			switch (item->outcome)
			{
				case FLYT_RETRY_QUEUED:
					status = "queued";
					break;
				case FLYT_RETRY_NOT_FOUND:
					status = "not_found";
					error = psprintf("instance " INT64_FORMAT " not found", item->instance_id);
					break;
				case FLYT_RETRY_NO_FLOW_HEADERS:
					status = "no_flow_headers";
					error = psprintf("instance " INT64_FORMAT " has no flow headers: %s",
									 item->instance_id, flyt_flow_outcome_detail(item->why));
					break;
			}
		values[0] = Int64GetDatum(item->instance_id);
		values[1] = CStringGetTextDatum(status);
		if (error == NULL)
		{
			values[2] = UUIDPGetDatum(&item->correlation_id);
			isnull[2] = false;
		}
		else
		{
			values[3] = CStringGetTextDatum(error);
			isnull[3] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
}

/*
 * flyt_retry_batch(instance_ids bigint[]) → setof (instance_id, status,
 * correlation_id, error): each distinct id retried independently, in the
 * order given.
 */
Datum
flyt_retry_batch(PG_FUNCTION_ARGS)
{
	ArrayType  *ids;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;

	flyt_require_argument(fcinfo, 0, "instance_ids");
	ids = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(ids) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("instance_ids must be a one-dimensional array")));

	InitMaterializedSRF(fcinfo, 0);
	deconstruct_array(ids, INT8OID, sizeof(int64), true, TYPALIGN_DOUBLE,
					  &elems, &elem_nulls, &nelems);
	flyt_retry_many((ReturnSetInfo *) fcinfo->resultinfo, elems, elem_nulls, nelems, false);
	return (Datum) 0;
}
