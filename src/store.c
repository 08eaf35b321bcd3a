/*-------------------------------------------------------------------------
 *
 * store.c
 *	  The instance store: registering, reading and deleting instances.
 *
 * Each function changes flyt.instance, appends to the instance's history
 * and queues the resulting Kafka message in flyt.outbox, all in the
 * caller's transaction: they commit together or not at all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "access/xact.h"
#include "utils/resowner.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "history.h"
#include "outbox.h"
#include "plans.h"
#include "shared.h"
#include "store.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_register_instance);
PG_FUNCTION_INFO_V1(flyt_instance);
PG_FUNCTION_INFO_V1(flyt_instance_dispatched);

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr select_plan = NULL;
static SPIPlanPtr delete_plan = NULL;

/*
 * Errors that say nothing about the input (cancellation, shutdown, lack of
 * resources, internal failures): they must stop the whole operation
 * instead of being recorded against one item of a batch.
 */
bool
flyt_error_is_systemic(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_INSUFFICIENT_RESOURCES:
		case ERRCODE_OPERATOR_INTERVENTION:
		case ERRCODE_SYSTEM_ERROR:
		case ERRCODE_INTERNAL_ERROR:
			return true;
		default:
			return false;
	}
}

/*
 * Runs fn(arg) in a subtransaction, so that a failure undoes only what fn
 * did.  Returns NULL when fn succeeded; otherwise the error (copied, with
 * the error state cleared and the subtransaction rolled back), except that
 * systemic errors are raised again.  The caller's memory context and
 * resource owner are kept.
 */
ErrorData *
flyt_run_isolated(void (*fn) (void *arg), void *arg)
{
	MemoryContext caller_context = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_context);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		if (flyt_error_is_systemic(edata->sqlerrcode))
			ReThrowError(edata);
	}
	PG_END_TRY();
	return edata;
}

/* Raises the error for a NULL argument that must not be NULL. */
void
flyt_require_argument(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

/*
 * Everything one registration writes, built in the current memory context:
 * the new id (which leaves the database, so it comes from the sequence
 * now), the row of flyt.instance, and the text of instance-registered.
 * Raises the error of an instance whose instance-registered Kafka could
 * never take.  headers->json gets instanceId.
 */
void
flyt_prepare_registration(FlytFlowHeaders *headers, json_t *payload, TimestampTz created_at,
						  FlytRegistration *r)
{
	r->id = flyt_next_value("instance_id_seq");
	json_object_set_new(headers->json, "instanceId", json_integer((json_int_t) r->id));
	r->payload = JsonbPGetDatum(flyt_json_to_jsonb(payload));
	r->flow_headers = JsonbPGetDatum(flyt_json_to_jsonb(headers->json));
	flyt_flow_header_columns(headers, r->columns, r->nulls);
	r->correlation_id = headers->correlation_id;
	r->key = flyt_instance_key(r->id);
	/* straight from the jsonb just built (keys in its order), as a retry writes them */
	r->wire_headers = flyt_flow_headers_text_from_jsonb(DatumGetJsonbP(r->flow_headers), NULL);
	if (r->wire_headers == NULL)
		r->wire_headers = flyt_flow_headers_text(headers->json);
	r->dto = flyt_instance_dto_from_jsonb(r->id, DatumGetJsonbP(r->payload), created_at);
	if (r->dto == NULL)
		r->dto = flyt_instance_dto(r->id, payload, created_at);
	flyt_outbox_check_size(FLYT_EVENT_REGISTERED, r->key, r->wire_headers, r->dto);
}

/*
 * Stores n prepared registrations in the caller's transaction with one
 * statement per table: the instances, their REGISTERED history and their
 * instance-registered messages, queued in the order given.  The caller is
 * connected to SPI.  A failure is the whole set's: the caller finds the
 * culprit by storing them one by one.
 */
void
flyt_store_registrations(FlytRegistration *regs, int n, TimestampTz created_at)
{
	static const Oid insert_types[] = {INT8ARRAYOID, JSONBARRAYOID, JSONBARRAYOID, INT8ARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		values[8];
	Datum	   *elems;
	bool	   *nulls;
	pg_uuid_t **correlation_ids;
	char	  **keys;
	char	  **wire_headers;
	char	  **dtos;

	if (n == 0)
		return;
	elems = palloc(sizeof(Datum) * n);
	nulls = palloc(sizeof(bool) * n);

	flyt_plan(&insert_plan,
			  "INSERT INTO flyt.instance (id, payload, flow_headers, source_application_id, "
			  "  source_application_integration_id, source_application_instance_id, "
			  "  integration_id, created_at) "
			  "OVERRIDING SYSTEM VALUE "
			  "SELECT u.*, $8 "
			  "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
			  "  pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) AS u",
			  8, insert_types);
	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(regs[i].id);
	values[0] = flyt_array(INT8OID, elems, NULL, n);
	for (int i = 0; i < n; i++)
		elems[i] = regs[i].payload;
	values[1] = flyt_array(JSONBOID, elems, NULL, n);
	for (int i = 0; i < n; i++)
		elems[i] = regs[i].flow_headers;
	values[2] = flyt_array(JSONBOID, elems, NULL, n);
	for (int column = 0; column < 4; column++)
	{
		for (int i = 0; i < n; i++)
		{
			elems[i] = regs[i].columns[column];
			nulls[i] = regs[i].nulls[column] == 'n';
		}
		values[3 + column] = flyt_array(column == 0 || column == 3 ? INT8OID : TEXTOID,
										elems, nulls, n);
	}
	values[7] = TimestampTzGetDatum(created_at);
	flyt_execute(insert_plan, values, NULL, false, 0, SPI_OK_INSERT);

	correlation_ids = palloc(sizeof(pg_uuid_t *) * n);
	keys = palloc(sizeof(char *) * n);
	wire_headers = palloc(sizeof(char *) * n);
	dtos = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
	{
		correlation_ids[i] = &regs[i].correlation_id;
		keys[i] = regs[i].key;
		wire_headers[i] = regs[i].wire_headers;
		dtos[i] = regs[i].dto;
		elems[i] = Int64GetDatum(regs[i].id);
	}
	flyt_append_events_of_new(elems, n, "REGISTERED", flyt_requested_by(), correlation_ids);
	flyt_outbox_enqueue_many(FLYT_EVENT_REGISTERED, n, keys, wire_headers, dtos);
	flyt_count(FLYT_COUNT_REGISTERED, n);
}

/*
 * Registers a validated instance: stores it with its flow headers (with
 * instanceId set to the new id), records REGISTERED and queues
 * instance-registered.  The caller is connected to SPI.
 */
int64
flyt_store_instance(FlytFlowHeaders *headers, json_t *payload)
{
	TimestampTz created_at = GetCurrentTransactionStartTimestamp();
	FlytRegistration r;

	flyt_prepare_registration(headers, payload, created_at, &r);
	flyt_store_registrations(&r, 1, created_at);
	return r.id;
}

/*
 * The searchable columns of flyt.instance that come from flow headers, in
 * this order: source_application_id, source_application_integration_id,
 * source_application_instance_id, integration_id (values[0..3], nulls[0..3]
 * for SPI).
 */
void
flyt_flow_header_columns(const FlytFlowHeaders *headers, Datum *values, char *nulls)
{
	values[0] = Int64GetDatum(headers->source_application_id);
	nulls[0] = ' ';
	if (headers->source_application_integration_id)
		values[1] = CStringGetTextDatum(headers->source_application_integration_id);
	nulls[1] = headers->source_application_integration_id ? ' ' : 'n';
	if (headers->source_application_instance_id)
		values[2] = CStringGetTextDatum(headers->source_application_instance_id);
	nulls[2] = headers->source_application_instance_id ? ' ' : 'n';
	if (headers->has_integration_id)
		values[3] = Int64GetDatum(headers->integration_id);
	nulls[3] = headers->has_integration_id ? ' ' : 'n';
}

/*
 * Instances carry personal data, and flyt_register_instance and
 * flyt_instance_dispatched take it as arguments: whatever they raise would
 * log the data with the statement (log_min_error_statement) and with a
 * caller's CONTEXT line (a PL/pgSQL caller's quotes the call).  This error
 * context callback, on the stack while one of them runs, marks every message
 * raised inside, at any level and by any code, to be logged without its
 * statement and context; the client still gets both.
 */
static void
hide_arguments_callback(void *arg)
{
	errhidestmt(true);
	errhidecontext(true);
}

/*
 * Calls fn, an SQL function that takes instance data, so that nothing it
 * raises logs that data.  Besides the statement and context
 * (hide_arguments_callback), the detail of PostgreSQL's own data exceptions
 * and integrity constraint violations can quote it (jsonb's "Token ... is
 * invalid.", a constraint's "Failing row contains (...)"): the log gets a
 * note instead, the client the detail itself.  wire.c rejects what jsonb
 * cannot store, so these are for what nobody foresaw, such as a constraint
 * added later.  flyt_instance's own errors about its arguments (22023
 * invalid_parameter_value, 22004 null_value_not_allowed) quote nothing and
 * keep their detail.
 */
static Datum
call_hiding_arguments(PGFunction fn, FunctionCallInfo fcinfo)
{
	MemoryContext caller_context = CurrentMemoryContext;
	ErrorContextCallback callback;
	Datum		result;

	callback.callback = hide_arguments_callback;
	callback.arg = NULL;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	PG_TRY();
	{
		result = fn(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			category;

		error_context_stack = callback.previous;
		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		if ((category == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
			 (category == ERRCODE_DATA_EXCEPTION &&
			  edata->sqlerrcode != ERRCODE_INVALID_PARAMETER_VALUE &&
			  edata->sqlerrcode != ERRCODE_NULL_VALUE_NOT_ALLOWED)) &&
			edata->detail != NULL && edata->detail_log == NULL)
		{
			FlushErrorState();
			edata->hide_stmt = true;
			edata->hide_ctx = true;
			edata->detail_log = pstrdup("The detail is left out of the server log: it may quote instance data.");
			ReThrowError(edata);
		}
		FreeErrorData(edata);
		PG_RE_THROW();
	}
	PG_END_TRY();
	error_context_stack = callback.previous;
	return result;
}

/*
 * flyt_register_instance(headers jsonb, instance jsonb) → bigint: what the
 * consumer does for instance-received.
 */
static Datum
register_instance(PG_FUNCTION_ARGS)
{
	FlytFlowHeaders headers;
	json_t	   *payload;
	int64		id;

	flyt_require_argument(fcinfo, 0, "headers");
	flyt_require_argument(fcinfo, 1, "instance");

	/* not detoasted yet: far too large arguments are rejected before */
	flyt_flow_headers_from_jsonb(PG_GETARG_DATUM(0), &headers);
	payload = flyt_instance_from_jsonb(PG_GETARG_DATUM(1));

	flyt_spi_connect();
	id = flyt_store_instance(&headers, payload);
	flyt_spi_finish();

	PG_RETURN_INT64(id);
}

Datum
flyt_register_instance(PG_FUNCTION_ARGS)
{
	return call_hiding_arguments(register_instance, fcinfo);
}

/*
 * Reads one instance as stored.  Returns false when it does not exist;
 * otherwise sets *payload and *created_at and, when flow_headers is not
 * NULL, *flow_headers (NULL when the instance has none), in SPI's memory.
 * lock takes FOR KEY SHARE, so that the instance cannot be deleted before
 * the caller's transaction ends.  The caller is connected to SPI.
 */
bool
flyt_fetch_stored_instance(int64 id, bool lock, Jsonb **payload, Jsonb **flow_headers,
						   TimestampTz *created_at)
{
	static const Oid argtypes[] = {INT8OID};
	static SPIPlanPtr locking_plan = NULL;
	SPIPlanPtr	plan;
	Datum		values[1];
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	if (lock)
		plan = flyt_plan(&locking_plan,
						 "SELECT payload, flow_headers, created_at FROM flyt.instance "
						 "WHERE id OPERATOR(pg_catalog.=) $1 FOR KEY SHARE",
						 1, argtypes);
	else
		plan = flyt_plan(&select_plan,
						 "SELECT payload, flow_headers, created_at FROM flyt.instance "
						 "WHERE id OPERATOR(pg_catalog.=) $1",
						 1, argtypes);
	values[0] = Int64GetDatum(id);
	if (flyt_execute(plan, values, NULL, !lock, 1, SPI_OK_SELECT) == 0)
		return false;

	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	*payload = DatumGetJsonbP(SPI_getbinval(tuple, desc, 1, &isnull));
	if (flow_headers != NULL)
	{
		d = SPI_getbinval(tuple, desc, 2, &isnull);
		*flow_headers = isnull ? NULL : DatumGetJsonbP(d);
	}
	*created_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 3, &isnull));
	return true;
}

/*
 * flyt_fetch_stored_instance, with the payload and flow headers as jansson
 * trees.
 */
bool
flyt_fetch_instance(int64 id, bool lock, json_t **payload, json_t **flow_headers,
					TimestampTz *created_at)
{
	Jsonb	   *stored_payload;
	Jsonb	   *stored_headers = NULL;

	if (!flyt_fetch_stored_instance(id, lock, &stored_payload,
									flow_headers != NULL ? &stored_headers : NULL, created_at))
		return false;
	*payload = flyt_jsonb_to_json(stored_payload, "instance");
	if (flow_headers != NULL)
		*flow_headers = stored_headers == NULL ? NULL : flyt_jsonb_to_json(stored_headers, "flow headers");
	return true;
}

/* Raises the "instance N not found" error (SQLSTATE P0002). */
void
flyt_instance_not_found(int64 id)
{
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("instance " INT64_FORMAT " not found", id)));
}

/* flyt_instance(instance_id bigint) → jsonb: the instance DTO. */
Datum
flyt_instance(PG_FUNCTION_ARGS)
{
	int64		id;
	json_t	   *payload;
	TimestampTz created_at;
	Datum		dto;

	flyt_require_argument(fcinfo, 0, "instance_id");
	id = PG_GETARG_INT64(0);

	flyt_spi_connect();
	if (!flyt_fetch_instance(id, false, &payload, NULL, &created_at))
		flyt_instance_not_found(id);
	/* built in SPI's memory, which SPI_finish frees: hand it over first */
	dto = DirectFunctionCall1(jsonb_in,
							  CStringGetDatum(flyt_instance_dto(id, payload, created_at)));
	PG_RETURN_DATUM(flyt_spi_finish_datum(dto, false, -1));
}

/*
 * What the original does for instance-dispatched: deletes the instance,
 * then queues instance-deleted with the dispatched record's flow headers,
 * also when the instance was already gone (its deleteById is then a no-op
 * and the event is sent all the same).  Records DISPATCHED and DELETED when
 * there was an instance.  Returns false when it was already gone.  The
 * caller is connected to SPI.
 */
bool
flyt_dispatch_instance(FlytFlowHeaders *headers)
{
	static const Oid argtypes[] = {INT8OID};
	SPIPlanPtr	plan;
	Datum		values[1];
	bool		deleted;
	int64		id = headers->instance_id;

	plan = flyt_plan(&delete_plan,
					 "DELETE FROM flyt.instance WHERE id OPERATOR(pg_catalog.=) $1",
					 1, argtypes);
	values[0] = Int64GetDatum(id);
	deleted = flyt_execute(plan, values, NULL, false, 0, SPI_OK_DELETE) > 0;
	if (deleted)
	{
		char	   *requested_by = flyt_requested_by();

		flyt_append_event(id, "DISPATCHED", requested_by, &headers->correlation_id, NULL);
		flyt_append_event(id, "DELETED", requested_by, &headers->correlation_id, NULL);
		flyt_count(FLYT_COUNT_DELETED, 1);
	}
	flyt_outbox_enqueue(FLYT_EVENT_DELETED, flyt_instance_key(id),
						flyt_flow_headers_text(headers->json), NULL);
	return deleted;
}

/*
 * flyt_instance_dispatched(headers jsonb) → boolean: what the consumer does
 * for instance-dispatched.
 */
static Datum
instance_dispatched(PG_FUNCTION_ARGS)
{
	FlytFlowHeaders headers;
	bool		deleted;

	flyt_require_argument(fcinfo, 0, "headers");
	flyt_flow_headers_from_jsonb(PG_GETARG_DATUM(0), &headers);
	if (!headers.has_instance_id)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers.instanceId is required"),
				 errdetail("instance-dispatched names the instance to delete in headers.instanceId.")));

	flyt_spi_connect();
	deleted = flyt_dispatch_instance(&headers);
	flyt_spi_finish();

	PG_RETURN_BOOL(deleted);
}

Datum
flyt_instance_dispatched(PG_FUNCTION_ARGS)
{
	return call_hiding_arguments(instance_dispatched, fcinfo);
}
