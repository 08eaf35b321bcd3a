/*-------------------------------------------------------------------------
 *
 * history.c
 *	  The event history of instances (flyt.instance_event).
 *
 * Each change of an instance appends one row with the next per-instance
 * version.  Writers do not lock the instance for this: two writers that read
 * the same last version collide on the unique (instance_id, version) index,
 * and the loser reads again and takes the next version, a bounded number of
 * times, as the optimistic event-sourced repository of seed 002 does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "history.h"
#include "plans.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_instance_history);

static SPIPlanPtr append_plan = NULL;
static SPIPlanPtr history_plan = NULL;

/* The name of the calling role, kept until a role changes. */
static Oid	cached_user = InvalidOid;
static char cached_user_name[NAMEDATALEN];
static bool user_callback_registered = false;

static void
forget_user_name(Datum arg, int cacheid, uint32 hashvalue)
{
	cached_user = InvalidOid;
}

/*
 * The name of the role that called: the session's current role outside any
 * SECURITY DEFINER function (GetUserId would name the functions' owner).
 * Cached, so that a retry does no catalog lookup.
 */
static const char *
caller_name(void)
{
	Oid			user = GetOuterUserId();

	if (user != cached_user)
	{
		if (!user_callback_registered)
		{
			CacheRegisterSyscacheCallback(AUTHOID, forget_user_name, (Datum) 0);
			user_callback_registered = true;
		}
		strlcpy(cached_user_name, GetUserNameFromId(user, false), NAMEDATALEN);
		cached_user = user;
	}
	return cached_user_name;
}

/*
 * Who asked for a change: the JWT subject when the call came through
 * PostgREST (request.jwt.claims, trusted only while the caller is PostgREST's
 * role flyt_web: anyone else could set it), otherwise the calling role.
 */
char *
flyt_requested_by(void)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	const char *caller = caller_name();

	if (claims != NULL && claims[0] != '\0' && strcmp(caller, FLYT_WEB_ROLE) == 0)
	{
		json_error_t error;
		json_t	   *json = json_loads(claims, 0, &error);

		if (json != NULL)
		{
			json_t	   *sub = json_object_get(json, "sub");
			char	   *result = NULL;

			if (json_is_string(sub) && json_string_length(sub) > 0)
				result = pstrdup(json_string_value(sub));
			json_decref(json);
			if (result != NULL)
				return result;
		}
	}
	return pstrdup(caller);
}

/*
 * Appends one event to the history of an instance and returns its version.
 * correlation_id and detail (JSON text) may be NULL.  The caller is
 * connected to SPI.
 */
int
flyt_append_event(int64 instance_id, const char *event_type,
				  const char *requested_by, const pg_uuid_t *correlation_id,
				  const char *detail)
{
	static const Oid argtypes[] = {INT8OID, TEXTOID, TEXTOID, UUIDOID, JSONBOID};
	SPIPlanPtr	plan;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	/*
	 * ON CONFLICT DO NOTHING instead of catching the unique violation: no
	 * subtransaction per event.  In READ COMMITTED each execution takes a
	 * new snapshot, so the next attempt sees the version that won; in
	 * REPEATABLE READ and SERIALIZABLE the conflict is a serialization
	 * failure the caller must retry.
	 */
	plan = flyt_plan(&append_plan,
					 "INSERT INTO flyt.instance_event "
					 "  (instance_id, version, event_type, requested_by, correlation_id, detail) "
					 "SELECT $1, COALESCE(pg_catalog.max(e.version), 0) + 1, $2, $3, $4, $5 "
					 "FROM flyt.instance_event e WHERE e.instance_id OPERATOR(pg_catalog.=) $1 "
					 "ON CONFLICT (instance_id, version) DO NOTHING "
					 "RETURNING version",
					 5, argtypes);

	values[0] = Int64GetDatum(instance_id);
	values[1] = CStringGetTextDatum(event_type);
	if (requested_by != NULL)
		values[2] = CStringGetTextDatum(requested_by);
	else
		nulls[2] = 'n';
	if (correlation_id != NULL)
		values[3] = UUIDPGetDatum(correlation_id);
	else
		nulls[3] = 'n';
	if (detail != NULL)
		values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(detail));
	else
		nulls[4] = 'n';

	for (int attempt = 1; attempt <= FLYT_MAX_VERSION_ATTEMPTS; attempt++)
	{
		if (flyt_execute(plan, values, nulls, false, 0, SPI_OK_INSERT_RETURNING) == 1)
		{
			bool		isnull;

			return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		}
		CHECK_FOR_INTERRUPTS();
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not record %s in the history of instance " INT64_FORMAT,
					event_type, instance_id),
			 errdetail("Concurrent changes took the next version %d times in a row.",
					   FLYT_MAX_VERSION_ATTEMPTS),
			 errhint("Retry the transaction.")));
	pg_unreachable();
}

/*
 * Appends one event to the history of each of n instances that another
 * transaction cannot see yet (just stored), with one statement: no
 * concurrent writer can take a version, so no conflict is possible.
 * correlation_ids[i] may be NULL.  The caller is connected to SPI.
 */
void
flyt_append_events_of_new(Datum *instance_ids, int n, const char *event_type,
						  const char *requested_by, pg_uuid_t **correlation_ids)
{
	static const Oid argtypes[] = {INT8ARRAYOID, TEXTOID, TEXTOID, UUIDARRAYOID};
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Datum	   *uuids = palloc(sizeof(Datum) * n);
	bool	   *isnull = palloc(sizeof(bool) * n);

	flyt_plan(&plan,
			  "INSERT INTO flyt.instance_event "
			  "  (instance_id, version, event_type, requested_by, correlation_id) "
			  "SELECT u.id, COALESCE((SELECT pg_catalog.max(e.version) FROM flyt.instance_event e"
			  "                       WHERE e.instance_id OPERATOR(pg_catalog.=) u.id), 0) OPERATOR(pg_catalog.+) 1,"
			  "  $2, $3, u.correlation_id "
			  "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($4)) AS u (id, correlation_id)",
			  4, argtypes);
	for (int i = 0; i < n; i++)
	{
		isnull[i] = correlation_ids[i] == NULL;
		uuids[i] = isnull[i] ? (Datum) 0 : UUIDPGetDatum(correlation_ids[i]);
	}
	values[0] = flyt_array(INT8OID, instance_ids, NULL, n);
	values[1] = CStringGetTextDatum(event_type);
	if (requested_by != NULL)
		values[2] = CStringGetTextDatum(requested_by);
	else
		nulls[2] = 'n';
	values[3] = flyt_array(UUIDOID, uuids, isnull, n);
	flyt_execute(plan, values, nulls, false, 0, SPI_OK_INSERT);
}

/*
 * flyt_instance_history(instance_id bigint) → setof (version, event_type,
 * occurred_at, requested_by, correlation_id, detail): the history of one
 * instance, oldest first.
 */
Datum
flyt_instance_history(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[] = {INT8OID};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SPIPlanPtr	plan;
	Datum		values[1];
	int64		instance_id;
	uint64		n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance_id must not be null")));
	instance_id = PG_GETARG_INT64(0);

	InitMaterializedSRF(fcinfo, 0);

	flyt_spi_connect();
	plan = flyt_plan(&history_plan,
					 "SELECT version, event_type, occurred_at, requested_by, correlation_id, detail "
					 "FROM flyt.instance_event WHERE instance_id OPERATOR(pg_catalog.=) $1 "
					 "ORDER BY version",
					 1, argtypes);
	values[0] = Int64GetDatum(instance_id);
	n = flyt_execute(plan, values, NULL, true, 0, SPI_OK_SELECT);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("instance " INT64_FORMAT " not found", instance_id),
				 errdetail("There is no history of this instance; it never existed or its history has been cleaned up.")));
	for (uint64 i = 0; i < n; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	flyt_spi_finish();

	return (Datum) 0;
}
