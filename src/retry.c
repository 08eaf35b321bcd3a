/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  Retrying instances: flyt_retry and flyt_retry_batch.
 *
 * A retry takes the stored flow headers of an instance, gives them a fresh
 * correlationId, queues instance-requested-for-retry with the instance as
 * value and records RETRY_REQUESTED.  Cost: one primary-key lookup (which
 * also takes a KEY SHARE lock, so cleanup cannot delete the instance under
 * the retry) and two inserts, with plans prepared once per backend.
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
	json_t	   *payload;
	json_t	   *headers;
	TimestampTz created_at;
	FlytRetryOutcome outcome = FLYT_RETRY_QUEUED;

	flyt_spi_connect();
	if (!flyt_fetch_instance(instance_id, true, &payload, &headers, &created_at))
		outcome = FLYT_RETRY_NOT_FOUND;
	else if (headers == NULL || !json_is_object(headers))
		outcome = FLYT_RETRY_NO_FLOW_HEADERS;
	else
	{
		flyt_new_correlation_id(correlation_id);
		flyt_set_correlation_id(headers, correlation_id);
		flyt_outbox_enqueue(FLYT_EVENT_RETRY, flyt_instance_key(instance_id),
							flyt_json_dump(headers),
							flyt_instance_dto(instance_id, payload, created_at));
		flyt_append_event(instance_id, "RETRY_REQUESTED", requested_by,
						  correlation_id, NULL);
		flyt_count(FLYT_COUNT_RETRIED, 1);
	}
	flyt_spi_finish();
	return outcome;
}

/* Raises the error of an outcome other than FLYT_RETRY_QUEUED. */
void
flyt_report_retry_outcome(FlytRetryOutcome outcome, int64 instance_id)
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
					 errdetail("The instance was stored without InstanceFlowHeaders, so no retry event can be addressed.")));
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

	flyt_require_argument(fcinfo, 0, "instance_id");
	instance_id = PG_GETARG_INT64(0);

	outcome = flyt_retry_instance(instance_id, flyt_requested_by(), correlation_id);
	flyt_report_retry_outcome(outcome, instance_id);

	PG_RETURN_UUID_P(correlation_id);
}

/* One retry of a batch, for flyt_run_isolated. */
typedef struct BatchRetry
{
	int64		instance_id;
	const char *requested_by;
	pg_uuid_t  *correlation_id;
	FlytRetryOutcome outcome;
} BatchRetry;

static void
batch_retry(void *arg)
{
	BatchRetry *r = arg;

	r->outcome = flyt_retry_instance(r->instance_id, r->requested_by, r->correlation_id);
}

/*
 * Retries one instance in a subtransaction, so that an unexpected failure
 * is reported as an "error" row and undoes nothing but this instance.
 * Returns the status text; sets *correlation_id or *error.
 */
static const char *
retry_isolated(int64 instance_id, const char *requested_by,
			   pg_uuid_t *correlation_id, char **error)
{
	BatchRetry	r = {instance_id, requested_by, correlation_id, FLYT_RETRY_QUEUED};
	ErrorData  *edata;
	FlytRetryOutcome outcome;

	*error = NULL;
	edata = flyt_run_isolated(batch_retry, &r);
	if (edata != NULL)
	{
		*error = pstrdup(edata->message);
		FreeErrorData(edata);
		return "error";
	}
	outcome = r.outcome;

	switch (outcome)
	{
		case FLYT_RETRY_QUEUED:
			return "queued";
		case FLYT_RETRY_NOT_FOUND:
			*error = psprintf("instance " INT64_FORMAT " not found", instance_id);
			return "not_found";
		case FLYT_RETRY_NO_FLOW_HEADERS:
			*error = psprintf("instance " INT64_FORMAT " has no flow headers", instance_id);
			return "no_flow_headers";
	}
	pg_unreachable();
}


/*
 * Retries each distinct id of ids[0..n) independently, in the order given,
 * writing one row per id to a materialized SRF result: (instance_id,
 * status, correlation_id, error).  A NULL (nulls[i]) is one not_found row.
 */
void
flyt_retry_many(ReturnSetInfo *rsinfo, const Datum *ids, const bool *nulls, int n)
{
	char	   *requested_by = flyt_requested_by();
	idhash_hash *seen = idhash_create(CurrentMemoryContext, Max(n, 8), NULL);
	bool		null_reported = false;

	for (int i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		isnull[4] = {false, false, true, true};
		pg_uuid_t  *correlation_id;
		char	   *error;
		const char *status;
		bool		found;
		int64		id;

		CHECK_FOR_INTERRUPTS();
		if (nulls != NULL && nulls[i])
		{
			if (null_reported)
				continue;
			null_reported = true;
			isnull[0] = true;
			values[1] = CStringGetTextDatum("not_found");
			values[3] = CStringGetTextDatum("instance id is null");
			isnull[3] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
			continue;
		}

		id = DatumGetInt64(ids[i]);
		(void) idhash_insert(seen, id, &found);
		if (found)
			continue;

		correlation_id = palloc(sizeof(pg_uuid_t));
		status = retry_isolated(id, requested_by, correlation_id, &error);
		values[0] = Int64GetDatum(id);
		values[1] = CStringGetTextDatum(status);
		if (error == NULL)
		{
			values[2] = UUIDPGetDatum(correlation_id);
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
	flyt_retry_many((ReturnSetInfo *) fcinfo->resultinfo, elems, elem_nulls, nelems);
	return (Datum) 0;
}
