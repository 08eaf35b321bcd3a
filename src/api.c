/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The HTTP surface for PostgREST (schema flyt_api): authorisation and
 *	  the two retry endpoints.
 *
 * PostgREST runs every request as its anonymous role flyt_web (FINT's tokens
 * carry no role claim) with the verified JWT payload in
 * request.jwt.claims.  flyt_api.authorize() decides, as the original
 * resource server did: internal clients by their subject, users by their
 * organisation and role.  PostgREST calls it before each request
 * (db-pre-request) and every API function calls it again first.
 *
 * Errors use PostgREST's custom SQLSTATEs PTnnn, which become HTTP status
 * nnn; messages say what was missing, never the token.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "guc.h"
#include "history.h"
#include "retry.h"
#include "store.h"

PG_FUNCTION_INFO_V1(flyt_api_authorize);
PG_FUNCTION_INFO_V1(flyt_api_retry);
PG_FUNCTION_INFO_V1(flyt_api_retry_batch);

#define ERRCODE_HTTP_400 MAKE_SQLSTATE('P','T','4','0','0')
#define ERRCODE_HTTP_401 MAKE_SQLSTATE('P','T','4','0','1')
#define ERRCODE_HTTP_403 MAKE_SQLSTATE('P','T','4','0','3')
#define ERRCODE_HTTP_404 MAKE_SQLSTATE('P','T','4','0','4')
#define ERRCODE_HTTP_500 MAKE_SQLSTATE('P','T','5','0','0')

/* Roles of the role catalog, weakest first; each implies those before it. */
static const char *const role_ladder[] = {"USER", "ADMIN", "DEVELOPER"};

#define REQUIRED_ROLE 0			/* USER */

static int
role_rank(const char *role)
{
	for (int i = 0; i < (int) lengthof(role_ladder); i++)
		if (pg_strcasecmp(role, role_ladder[i]) == 0)
			return i;
	return -1;
}

/*
 * The role named by a role-catalog URL: its last path segment, upper-cased
 * ("https://role-catalog.vigoiks.no/vigo/flyt/user" is USER).
 */
static const char *
role_of_url(const char *url)
{
	const char *end = url + strlen(url);
	const char *start;

	while (end > url && end[-1] == '/')
		end--;
	start = end;
	while (start > url && start[-1] != '/')
		start--;
	return pnstrdup(start, end - start);
}

/* Is sub one of flyt_instance.internal_clients? */
static bool
is_internal_client(const char *sub)
{
	const char *p = flyt_internal_clients;
	size_t		len = strlen(sub);

	while (p != NULL && *p)
	{
		const char *start;
		const char *end;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if ((size_t) (end - start) == len && strncmp(start, sub, len) == 0)
			return true;
	}
	return false;
}

static void
forbidden(const char *message, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_HTTP_403),
			 errmsg("%s", message),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("Internal clients are listed in flyt_instance.internal_clients; user organisations and roles in flyt_instance.authorized_org_id_role_pairs.")));
}

/*
 * Allows the request or raises PT401 (no token) or PT403 (a token that is
 * not allowed).
 */
static void
authorize(void)
{
	const char *claims_text = GetConfigOption("request.jwt.claims", true, false);
	json_t	   *claims = NULL;
	json_t	   *sub;
	json_t	   *org;
	json_t	   *roles;
	json_t	   *pairs;
	json_t	   *allowed;
	json_t	   *role;
	const char *key;
	json_t	   *value;
	bool		has_claims = false;
	size_t		i;
	int			best = -1;
	StringInfoData held;

	if (claims_text != NULL && claims_text[0] != '\0')
		claims = json_loads(claims_text, 0, NULL);
	if (json_is_object(claims))
	{
		json_object_foreach(claims, key, value)
		{
			if (strcmp(key, "role") != 0)
				has_claims = true;
		}
	}
	if (!has_claims)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_401),
				 errmsg("authentication required"),
				 errdetail("The request carries no bearer token."),
				 errhint("Send an access token from FINT's identity provider in the Authorization header.")));

	/* internal clients, by their client id */
	sub = json_object_get(claims, "sub");
	if (json_is_string(sub) && is_internal_client(json_string_value(sub)))
		return;

	/* users, by organisation and role */
	org = json_object_get(claims, "organizationid");
	if (!json_is_string(org) || json_string_length(org) == 0)
		forbidden("the token is neither an internal client's nor a user's with an organisation",
				  json_is_string(sub) ? "Its subject is not in flyt_instance.internal_clients and it has no organizationid claim." :
				  "It has no subject and no organizationid claim.");

	pairs = json_loads(flyt_authorized_org_id_role_pairs, 0, NULL);
	allowed = json_object_get(pairs, json_string_value(org));
	if (!json_is_array(allowed))
		forbidden(psprintf("organisation %s is not authorised", json_string_value(org)),
				  "It is not a key of flyt_instance.authorized_org_id_role_pairs.");

	/*
	 * The user's strongest role counts, as it implies the weaker ones; the
	 * organisation lists the roles that may call, so the user needs one of
	 * them or a stronger one.
	 */
	roles = json_object_get(claims, "roles");
	initStringInfo(&held);
	json_array_foreach(roles, i, role)
	{
		int			rank;

		if (!json_is_string(role))
			continue;
		rank = role_rank(role_of_url(json_string_value(role)));
		if (rank < 0)
			continue;
		appendStringInfo(&held, "%s%s", held.len ? ", " : "", role_ladder[rank]);
		best = Max(best, rank);
	}
	json_array_foreach(allowed, i, role)
	{
		int			rank = json_is_string(role) ? role_rank(json_string_value(role)) : -1;

		if (rank >= REQUIRED_ROLE && best >= rank)
		{
			json_decref(pairs);
			json_decref(claims);
			return;
		}
	}
	forbidden(psprintf("none of the token's roles is authorised for organisation %s", json_string_value(org)),
			  psprintf("The token holds %s; the organisation allows %s (or a stronger role), and the API needs %s.",
					   held.len ? held.data : "no role-catalog role",
					   json_dumps(allowed, JSON_COMPACT), role_ladder[REQUIRED_ROLE]));
}

/* flyt_api.authorize() → void: PostgREST's db-pre-request. */
Datum
flyt_api_authorize(PG_FUNCTION_ARGS)
{
	authorize();
	PG_RETURN_VOID();
}

/*
 * flyt_retry_instance, with every failure that is not about the request
 * reported as PT500 (PostgREST would turn some of them into 4xx codes),
 * its text logged rather than answered.  Cancellation and shutdown keep
 * their own codes.
 */
static FlytRetryOutcome
retry_or_500(int64 instance_id, pg_uuid_t *correlation_id)
{
	MemoryContext caller_context = CurrentMemoryContext;
	volatile FlytRetryOutcome outcome = FLYT_RETRY_QUEUED;

	PG_TRY();
	{
		outcome = flyt_retry_instance(instance_id, flyt_requested_by(), correlation_id);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		if (flyt_error_is_systemic(edata->sqlerrcode))
			PG_RE_THROW();
		FlushErrorState();
		/* the reason is for the operator, not for whoever sent the request */
		ereport(LOG,
				(errmsg("flyt_instance: the retry of instance " INT64_FORMAT " failed: %s",
						instance_id, edata->message)));
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_500),
				 errmsg("the retry of instance " INT64_FORMAT " failed", instance_id),
				 errdetail("The server log has the reason.")));
	}
	PG_END_TRY();
	return outcome;
}

/*
 * flyt_api.retry(instance_id bigint) → uuid: POST /rpc/retry.  Unknown
 * instance: PT404; no flow headers or any failure: PT500.
 */
Datum
flyt_api_retry(PG_FUNCTION_ARGS)
{
	int64		instance_id;
	pg_uuid_t  *correlation_id = palloc(sizeof(pg_uuid_t));
	FlytRetryOutcome outcome;

	authorize();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_400),
				 errmsg("instance_id is required")));
	instance_id = PG_GETARG_INT64(0);

	outcome = retry_or_500(instance_id, correlation_id);
	if (outcome == FLYT_RETRY_NOT_FOUND)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_404),
				 errmsg("instance " INT64_FORMAT " not found", instance_id)));
	if (outcome == FLYT_RETRY_NO_FLOW_HEADERS)
		ereport(ERROR,
				(errcode(ERRCODE_HTTP_500),
				 errmsg("instance " INT64_FORMAT " has no flow headers", instance_id),
				 errdetail("The instance was stored without InstanceFlowHeaders, so no retry event can be addressed.")));
	PG_RETURN_UUID_P(correlation_id);
}

static void
bad_batch(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_HTTP_400),
			 errmsg("the request body must be a JSON array of instance ids (integers)"),
			 errdetail("%s", detail)));
}

/*
 * flyt_api.retry_batch(jsonb) → setof (instance_id, status, correlation_id,
 * error): POST /rpc/retry_batch with the raw JSON array of ids as body.
 */
Datum
flyt_api_retry_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *body;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	Datum	   *ids;
	int			n = 0;
	int			size;
	Datum		max_id = DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MAX));
	Datum		min_id = DirectFunctionCall1(int8_numeric, Int64GetDatum(PG_INT64_MIN));

	authorize();
	if (PG_ARGISNULL(0))
		bad_batch("The body is empty.");
	body = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_ARRAY(body) || JB_ROOT_IS_SCALAR(body))
		bad_batch(JB_ROOT_IS_OBJECT(body) ? "The body is a JSON object." : "The body is a JSON scalar.");

	size = JB_ROOT_COUNT(body);
	ids = palloc(sizeof(Datum) * Max(size, 1));
	it = JsonbIteratorInit(&body->root);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (token != WJB_ELEM)
			continue;
		if (v.type != jbvNumeric || numeric_is_nan(v.val.numeric) || numeric_is_inf(v.val.numeric) ||
			!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v.val.numeric),
											  DirectFunctionCall1(numeric_floor, NumericGetDatum(v.val.numeric)))))
			bad_batch(psprintf("Element %d is not an integer.", n + 1));
		if (!DatumGetBool(DirectFunctionCall2(numeric_le, NumericGetDatum(v.val.numeric), max_id)) ||
			!DatumGetBool(DirectFunctionCall2(numeric_ge, NumericGetDatum(v.val.numeric), min_id)))
			bad_batch(psprintf("Element %d is out of range for an instance id.", n + 1));
		ids[n++] = DirectFunctionCall1(numeric_int8, NumericGetDatum(v.val.numeric));
	}

	InitMaterializedSRF(fcinfo, 0);
	flyt_retry_many((ReturnSetInfo *) fcinfo->resultinfo, ids, NULL, n, true);
	return (Datum) 0;
}
