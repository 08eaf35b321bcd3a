/*-------------------------------------------------------------------------
 *
 * deadletter.c
 *	  Dead letters an operator can act on: list, redrive, discard.
 *
 * flyt.dead_letter holds consumed messages the consumer could not apply and
 * outbox messages that exhausted their redeliveries.  Each row is dead until
 * an operator redrives or discards it; every redrive and discard is a
 * flyt.dead_letter_action row (who, when, what came of it) and, where an
 * instance is concerned, a history row (REDRIVEN, REDRIVE_FAILED,
 * DISCARDED).
 *
 * Redriving:
 *
 * - an outbox message goes back into flyt.outbox as it was (topic, key,
 *   headers with the same flyt.event-id, value) under a new outbox id: it is
 *   sent after every row of its key queued before the redrive, and before
 *   any queued after it (the pump's per-key order).  It cannot go back in
 *   time: a later event of the same instance that was sent while it was
 *   dead stays before it on Kafka.  Consumers that drop duplicates by
 *   flyt.event-id see it once.
 * - a consumed instance-received or instance-dispatched is applied again
 *   with the consumer's own functions (flyt_parse_flow_headers,
 *   flyt_parse_instance, flyt_store_instance, flyt_dispatch_instance), so the
 *   same validation and the same effects; it keeps its topic, partition and
 *   offset.  When that fails it stays dead with the new reason (the old one
 *   is kept in the action row), and an instance-received with readable flow
 *   headers queues instance-registration-error, as the consumer does.  A
 *   reply of history-service is nothing to redrive.
 *
 * Idempotency: a redrive or discard locks the dead letter (FOR UPDATE) and
 * changes its status in the caller's transaction, so of two concurrent
 * redrives of one id the second waits, then finds it redriven and does
 * nothing.  Errors that say nothing about the message (lock timeouts,
 * serialization failures) are raised, not recorded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include <ctype.h>
#include <errno.h>

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "consumer.h"
#include "deadletter.h"
#include "history.h"
#include "outbox.h"
#include "plans.h"
#include "shared.h"
#include "store.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_dead_letters);
PG_FUNCTION_INFO_V1(flyt_dead_letter_redrive);
PG_FUNCTION_INFO_V1(flyt_dead_letter_redrive_matching);
PG_FUNCTION_INFO_V1(flyt_dead_letter_discard);
PG_FUNCTION_INFO_V1(flyt_dead_letter_discard_matching);

/* Most rows one call lists or acts on. */
#define MAX_ROWS 10000

#define EQ " OPERATOR(pg_catalog.=) "

/* The filter shared by the list and the bulk forms. */
#define FILTER_ARGS 6
#define FILTER_WHERE \
	"($1 IS NULL OR d.topic" EQ "$1) " \
	"AND ($2 IS NULL OR d.created_at OPERATOR(pg_catalog.>=) $2) " \
	"AND ($3 IS NULL OR d.created_at OPERATOR(pg_catalog.<) $3) " \
	"AND ($4 IS NULL OR (d.failure_details OPERATOR(pg_catalog.->>) 'sqlstate')" EQ "$4) " \
	"AND ($5 IS NULL OR d.failure_transience" EQ "$5) " \
	"AND ($6 IS NULL OR d.status" EQ "$6) "
static const Oid filter_types[] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID,
TEXTOID, BOOLOID, INT4OID};

typedef struct Filter
{
	Datum		values[FILTER_ARGS + 2];	/* + with_payload, max_rows */
	char		nulls[FILTER_ARGS + 2];
	int			max_rows;
} Filter;

/* One dead letter, locked. */
typedef struct DeadRow
{
	int64		id;
	char	   *status;
	bool		outbox;
	char	   *topic;
	char	   *key;			/* outbox rows: the instance id as text */
	char	   *flow_headers;	/* the flyt.instance-flow-headers header */
	bool		has_headers;
	bytea	   *payload;
	char	   *event_name;		/* outbox rows */
	Datum		failure_details;
	int32		partition;
	int64		offset;
} DeadRow;

static SPIPlanPtr list_plan = NULL;
static SPIPlanPtr match_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr requeue_plan = NULL;
static SPIPlanPtr resolve_plan = NULL;
static SPIPlanPtr still_dead_plan = NULL;
static SPIPlanPtr action_plan = NULL;
static SPIPlanPtr known_plan = NULL;
static SPIPlanPtr summary_plan = NULL;
static SPIPlanPtr counts_plan = NULL;

const char *
flyt_dead_letter_outcome_name(FlytDeadLetterOutcome outcome)
{
	switch (outcome)
	{
		case FLYT_DL_NOT_FOUND:
			return "not_found";
		case FLYT_DL_REDRIVEN:
			return "redriven";
		case FLYT_DL_FAILED:
			return "failed";
		case FLYT_DL_DISCARDED:
			return "discarded";
		case FLYT_DL_ALREADY_REDRIVEN:
			return "already_redriven";
		case FLYT_DL_ALREADY_DISCARDED:
			return "already_discarded";
		case FLYT_DL_NOT_REDRIVABLE:
			return "not_redrivable";
	}
	return "unknown";
}

/* ---------------------------------------------------------------------------
 * Arguments
 * ---------------------------------------------------------------------------
 */

static void
bad_argument(const char *message, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", message),
			 detail ? errdetail("%s", detail) : 0));
}

/*
 * Reads topic, since, until, sqlstate, transience (arguments 0-4), status
 * (argument status_arg, or none when -1) and max_rows (argument max_arg).
 */
static void
read_filter(FunctionCallInfo fcinfo, int status_arg, int max_arg, Filter *f)
{
	memset(f->nulls, ' ', sizeof(f->nulls));
	for (int i = 0; i < 5; i++)
	{
		if (PG_ARGISNULL(i))
		{
			f->values[i] = (Datum) 0;
			f->nulls[i] = 'n';
		}
		else
			f->values[i] = PG_GETARG_DATUM(i);
	}
	if (!PG_ARGISNULL(1) && !PG_ARGISNULL(2) &&
		PG_GETARG_TIMESTAMPTZ(1) >= PG_GETARG_TIMESTAMPTZ(2))
		bad_argument("since must be before until",
					 "The dead letters listed were created at or after since and before until.");
	if (!PG_ARGISNULL(3))
	{
		char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(3));
		bool		ok = strlen(s) == 5;

		for (char *p = s; ok && *p; p++)
			ok = isdigit((unsigned char) *p) || isupper((unsigned char) *p);
		if (!ok)
			bad_argument("sqlstate must be five digits or upper-case letters",
						 "It is compared with failure_details->>'sqlstate', such as 22023 or 54000.");
	}
	if (!PG_ARGISNULL(4))
	{
		char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(4));

		if (pg_strcasecmp(s, "TRANSIENT") != 0 && pg_strcasecmp(s, "PERMANENT") != 0)
			bad_argument("transience must be TRANSIENT or PERMANENT", NULL);
		for (char *p = s; *p; p++)
			*p = pg_toupper((unsigned char) *p);
		f->values[4] = CStringGetTextDatum(s);
	}
	f->values[5] = (Datum) 0;
	f->nulls[5] = 'n';
	if (status_arg >= 0 && !PG_ARGISNULL(status_arg))
	{
		char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(status_arg));

		if (pg_strcasecmp(s, "dead") != 0 && pg_strcasecmp(s, "redriven") != 0 &&
			pg_strcasecmp(s, "discarded") != 0)
			bad_argument("status must be dead, redriven or discarded", NULL);
		for (char *p = s; *p; p++)
			*p = pg_tolower((unsigned char) *p);
		f->values[5] = CStringGetTextDatum(s);
		f->nulls[5] = ' ';
	}
	flyt_require_argument(fcinfo, max_arg, "max_rows");
	f->max_rows = PG_GETARG_INT32(max_arg);
	if (f->max_rows < 1 || f->max_rows > MAX_ROWS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be between 1 and %d", MAX_ROWS),
				 errdetail("max_rows is %d.", f->max_rows)));
}

/* Raw bytes as text when they are valid UTF-8 without NUL, otherwise as \x hex. */
static Datum
bytes_text(bytea *b)
{
	const char *data = VARDATA_ANY(b);
	int			len = VARSIZE_ANY_EXHDR(b);
	StringInfoData hex;

	if (pg_verifymbstr(data, len, true))
		return PointerGetDatum(cstring_to_text_with_len(data, len));
	initStringInfo(&hex);
	appendStringInfoString(&hex, "\\x");
	for (int i = 0; i < len; i++)
		appendStringInfo(&hex, "%02x", (unsigned char) data[i]);
	return CStringGetTextDatum(hex.data);
}

/* ---------------------------------------------------------------------------
 * flyt_dead_letters
 * ---------------------------------------------------------------------------
 */

#define LIST_COLUMNS 22
#define COL_KEY 18				/* 0-based: message_key */
#define COL_PAYLOAD 20

/*
 * flyt_dead_letters(topic, since, until, sqlstate, transience, status,
 * with_payload, max_rows) → setof record, newest first.  Also the body of
 * flyt_api.dead_letters.
 */
Datum
flyt_dead_letters_srf(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Filter		f;
	uint64		n;

	read_filter(fcinfo, 5, 7, &f);
	flyt_require_argument(fcinfo, 6, "with_payload");
	f.values[6] = PG_GETARG_DATUM(6);
	f.values[7] = Int32GetDatum(f.max_rows);

	InitMaterializedSRF(fcinfo, 0);
	if (rsinfo->setDesc->natts != LIST_COLUMNS)
		elog(ERROR, "flyt_dead_letters: expected %d result columns, got %d",
			 LIST_COLUMNS, rsinfo->setDesc->natts);

	flyt_spi_connect();
	flyt_plan(&list_plan,
			  "SELECT d.id, d.status, d.topic, "
			  "  CASE WHEN d.outbox_id IS NULL THEN 'consumed' ELSE 'outbox' END, "
			  "  d.kafka_partition, d.kafka_offset, d.outbox_id, d.original_message_id, "
			  "  d.failure_details OPERATOR(pg_catalog.->>) 'event', "
			  "  d.headers OPERATOR(pg_catalog.->>) '" FLYT_HEADER_EVENT_ID "', "
			  "  d.failure_transience, d.failure_details OPERATOR(pg_catalog.->>) 'sqlstate', "
			  "  d.failure_details OPERATOR(pg_catalog.->>) 'errorMessage', d.message_delivery_attempts, "
			  "  (SELECT pg_catalog.count(*) FROM flyt.dead_letter_action a "
			  "   WHERE a.dead_letter_id" EQ "d.id AND a.action OPERATOR(pg_catalog.<>) 'discarded')::pg_catalog.int4, "
			  "  d.created_at, d.resolved_at, d.resolved_by, "
			  "  CASE WHEN $7 THEN d.message_key END, CASE WHEN $7 THEN d.headers END, "
			  "  CASE WHEN $7 THEN d.original_message_payload END, CASE WHEN $7 THEN d.failure_details END "
			  "FROM flyt.dead_letter d WHERE " FILTER_WHERE
			  "ORDER BY d.created_at DESC, d.id DESC LIMIT $8",
			  FILTER_ARGS + 2, filter_types);
	n = flyt_execute(list_plan, f.values, f.nulls, true, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < n; i++)
	{
		Datum		values[LIST_COLUMNS];
		bool		isnull[LIST_COLUMNS];

		for (int c = 0; c < LIST_COLUMNS; c++)
		{
			values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &isnull[c]);
			if (!isnull[c] && (c == COL_KEY || c == COL_PAYLOAD))
				values[c] = bytes_text(DatumGetByteaPP(values[c]));
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	flyt_spi_finish();
	return (Datum) 0;
}

Datum
flyt_dead_letters(PG_FUNCTION_ARGS)
{
	return flyt_dead_letters_srf(fcinfo);
}

/* ---------------------------------------------------------------------------
 * Redrive and discard of one dead letter
 * ---------------------------------------------------------------------------
 */

/* Locks and reads one dead letter; false when there is none.  Connected to SPI. */
static bool
lock_dead_letter(int64 id, DeadRow *row)
{
	static const Oid argtypes[] = {INT8OID};
	Datum		values[1];
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	flyt_plan(&lock_plan,
			  "SELECT status, outbox_id IS NOT NULL, topic, pg_catalog.convert_from(message_key, 'UTF8'), "
			  "  headers OPERATOR(pg_catalog.->>) '" FLYT_HEADER_FLOW_HEADERS "', headers IS NOT NULL, "
			  "  original_message_payload, failure_details OPERATOR(pg_catalog.->>) 'event', "
			  "  failure_details, kafka_partition, kafka_offset "
			  "FROM flyt.dead_letter WHERE id" EQ "$1 FOR UPDATE",
			  1, argtypes);
	values[0] = Int64GetDatum(id);
	if (flyt_execute(lock_plan, values, NULL, false, 0, SPI_OK_SELECT) == 0)
		return false;
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memset(row, 0, sizeof(*row));
	row->id = id;
	row->status = SPI_getvalue(tuple, desc, 1);
	row->outbox = DatumGetBool(SPI_getbinval(tuple, desc, 2, &isnull));
	row->topic = SPI_getvalue(tuple, desc, 3);
	/* only outbox rows are read as text: a consumed key may be any bytes */
	row->key = row->outbox ? SPI_getvalue(tuple, desc, 4) : NULL;
	row->flow_headers = SPI_getvalue(tuple, desc, 5);
	row->has_headers = DatumGetBool(SPI_getbinval(tuple, desc, 6, &isnull));
	d = SPI_getbinval(tuple, desc, 7, &isnull);
	row->payload = isnull ? NULL : DatumGetByteaPCopy(d);
	row->event_name = SPI_getvalue(tuple, desc, 8);
	row->failure_details = SPI_datumTransfer(SPI_getbinval(tuple, desc, 9, &isnull), false, -1);
	d = SPI_getbinval(tuple, desc, 10, &isnull);
	row->partition = isnull ? -1 : DatumGetInt32(d);
	d = SPI_getbinval(tuple, desc, 11, &isnull);
	row->offset = isnull ? -1 : DatumGetInt64(d);
	return true;
}

static bool
topic_is(const char *topic, const char *event_name)
{
	size_t		tl = strlen(topic);
	char	   *suffix = psprintf(".event.%s", event_name);
	size_t		sl = strlen(suffix);

	return tl > sl && strcmp(topic + tl - sl, suffix) == 0;
}

/* A decimal instance id, or 0. */
static int64
parse_instance_id(const char *text)
{
	char	   *end;
	long long	v;

	if (text == NULL || !isdigit((unsigned char) text[0]))
		return 0;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno != 0 || *end != '\0' || v <= 0)
		return 0;
	return (int64) v;
}

/*
 * The instance a dead letter concerns, when one is known: the key of an
 * outbox message, headers.instanceId of a consumed instance-dispatched.
 * 0 otherwise (an instance-received has no instance until it is applied).
 */
static int64
instance_of(const DeadRow *row)
{
	int64		id = 0;

	if (row->outbox)
		return parse_instance_id(row->key);
	if (row->flow_headers != NULL && topic_is(row->topic, FLYT_EVENT_DISPATCHED))
	{
		json_t	   *h = json_loads(row->flow_headers, 0, NULL);
		json_t	   *v = json_object_get(h, "instanceId");

		if (json_is_integer(v) && json_integer_value(v) > 0)
			id = (int64) json_integer_value(v);
		json_decref(h);
	}
	return id;
}

/* Does flyt_instance know the instance (stored, or with history)? */
static bool
instance_known(int64 id)
{
	static const Oid argtypes[] = {INT8OID};
	Datum		values[1];
	bool		isnull;

	if (id <= 0)
		return false;
	flyt_plan(&known_plan,
			  "SELECT EXISTS (SELECT FROM flyt.instance WHERE id" EQ "$1) "
			  "    OR EXISTS (SELECT FROM flyt.instance_event WHERE instance_id" EQ "$1)",
			  1, argtypes);
	values[0] = Int64GetDatum(id);
	flyt_execute(known_plan, values, NULL, false, 0, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Appends event_type to the history of the instance, when it is known. */
static void
record_history(int64 instance_id, const char *event_type, const char *by,
			   const DeadRow *row, int64 outbox_id, const char *error)
{
	json_t	   *detail;

	if (!instance_known(instance_id))
		return;
	detail = json_pack("{s:I, s:s, s:s}", "dead_letter_id", (json_int_t) row->id,
					   "topic", row->topic, "origin", row->outbox ? "outbox" : "consumed");
	if (!row->outbox)
	{
		json_object_set_new(detail, "partition", json_integer(row->partition));
		json_object_set_new(detail, "offset", json_integer((json_int_t) row->offset));
	}
	if (outbox_id > 0)
		json_object_set_new(detail, "outbox_id", json_integer((json_int_t) outbox_id));
	if (error != NULL)
		json_object_set_new(detail, "error", json_string(error));
	flyt_append_event(instance_id, event_type, by, NULL, flyt_json_dump(detail));
	json_decref(detail);
}

static void
record_action(int64 id, const char *action, const char *by, int64 outbox_id,
			  int64 instance_id, const char *failure_details, Datum replaced, bool has_replaced)
{
	static const Oid argtypes[] = {INT8OID, TEXTOID, TEXTOID, INT8OID, INT8OID, JSONBOID, JSONBOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	flyt_plan(&action_plan,
			  "INSERT INTO flyt.dead_letter_action (dead_letter_id, action, acted_by, outbox_id, "
			  "  instance_id, failure_details, replaced_failure_details) "
			  "VALUES ($1, $2, $3, $4, $5, $6, $7)",
			  7, argtypes);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(action);
	values[2] = CStringGetTextDatum(by);
	values[3] = Int64GetDatum(outbox_id);
	nulls[3] = outbox_id > 0 ? ' ' : 'n';
	values[4] = Int64GetDatum(instance_id);
	nulls[4] = instance_id > 0 ? ' ' : 'n';
	if (failure_details != NULL)
		values[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(failure_details));
	else
		nulls[5] = 'n';
	values[6] = replaced;
	nulls[6] = has_replaced ? ' ' : 'n';
	flyt_execute(action_plan, values, nulls, false, 0, SPI_OK_INSERT);
}

static void
resolve(int64 id, const char *status, const char *by)
{
	static const Oid argtypes[] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];

	flyt_plan(&resolve_plan,
			  "UPDATE flyt.dead_letter SET status = $2, resolved_at = pg_catalog.now(), resolved_by = $3 "
			  "WHERE id" EQ "$1",
			  3, argtypes);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(status);
	values[2] = CStringGetTextDatum(by);
	flyt_execute(resolve_plan, values, NULL, false, 0, SPI_OK_UPDATE);
}

/* An outbox message: back into flyt.outbox as it was, under a new id. */
static FlytDeadLetterOutcome
redrive_outbox(const DeadRow *row, const char *by)
{
	static const Oid argtypes[] = {INT8OID};
	Datum		values[1];
	bool		isnull;
	int64		outbox_id;
	int64		instance_id;

	if (row->event_name == NULL || !row->has_headers)
		return FLYT_DL_NOT_REDRIVABLE;
	flyt_plan(&requeue_plan,
			  "INSERT INTO flyt.outbox (id, event_name, topic, key, headers, value) "
			  "SELECT pg_catalog.nextval('flyt.outbox_id_seq'::pg_catalog.regclass), "
			  "  d.failure_details OPERATOR(pg_catalog.->>) 'event', d.topic, "
			  "  pg_catalog.convert_from(d.message_key, 'UTF8'), d.headers, "
			  "  pg_catalog.convert_from(d.original_message_payload, 'UTF8') "
			  "FROM flyt.dead_letter d WHERE d.id" EQ "$1 "
			  "RETURNING id",
			  1, argtypes);
	values[0] = Int64GetDatum(row->id);
	flyt_execute(requeue_plan, values, NULL, false, 0, SPI_OK_INSERT_RETURNING);
	outbox_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	flyt_wake_worker_at_commit();

	instance_id = instance_of(row);
	resolve(row->id, "redriven", by);
	record_action(row->id, "redriven", by, outbox_id, instance_known(instance_id) ? instance_id : 0,
				  NULL, (Datum) 0, false);
	record_history(instance_id, "REDRIVEN", by, row, outbox_id, NULL);
	ereport(LOG,
			(errmsg("flyt_instance: dead letter " INT64_FORMAT " (%s) queued again as outbox message " INT64_FORMAT " by %s",
					row->id, row->event_name, outbox_id, by)));
	return FLYT_DL_REDRIVEN;
}

typedef struct Apply
{
	const DeadRow *row;
	bool		received;
	int64		instance_id;	/* registered, or named by instance-dispatched */
	char	   *flow_headers;	/* read_flow_headers: as they are sent on */
} Apply;

/* The consumer's message_flow_headers, on the stored header. */
static void
parse_headers(const DeadRow *row, FlytFlowHeaders *headers)
{
	if (row->flow_headers == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message has no %s header", FLYT_HEADER_FLOW_HEADERS)));
	flyt_parse_flow_headers(row->flow_headers, strlen(row->flow_headers), headers);
}

/* The consumer's apply_message, on the stored message (run isolated). */
static void
apply_again(void *arg)
{
	Apply	   *a = arg;
	FlytFlowHeaders headers;

	flyt_spi_connect();
	parse_headers(a->row, &headers);
	if (a->received)
	{
		json_t	   *payload;

		if (a->row->payload == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("instance-received message has no value")));
		payload = flyt_parse_instance(VARDATA_ANY(a->row->payload),
									  VARSIZE_ANY_EXHDR(a->row->payload));
		a->instance_id = flyt_store_instance(&headers, payload);
	}
	else
	{
		if (!headers.has_instance_id)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("headers.instanceId is required"),
					 errdetail("instance-dispatched names the instance to delete in headers.instanceId.")));
		a->instance_id = headers.instance_id;
		(void) flyt_dispatch_instance(&headers);
	}
	flyt_spi_finish();
}

static void
read_flow_headers(void *arg)
{
	Apply	   *a = arg;
	FlytFlowHeaders headers;

	parse_headers(a->row, &headers);
	a->flow_headers = flyt_flow_headers_text(headers.json);
}

/* failure_details of an error, as the consumer writes them. */
static char *
failure_json(ErrorData *edata)
{
	json_t	   *details = json_pack("{s:s, s:s}", "errorMessage", edata->message ? edata->message : "",
									"sqlstate", unpack_sql_state(edata->sqlerrcode));
	char	   *text;

	if (edata->detail)
		json_object_set_new(details, "detail", json_string(edata->detail));
	if (edata->context)
		json_object_set_new(details, "context", json_string(edata->context));
	text = flyt_json_dump(details);
	json_decref(details);
	return text;
}

/* A consumed message: applied again as the consumer applies it. */
static FlytDeadLetterOutcome
redrive_consumed(const DeadRow *row, const char *by)
{
	static const Oid argtypes[] = {INT8OID, JSONBOID, TEXTOID};
	Apply		a = {row, false, 0, NULL};
	ErrorData  *edata;
	Datum		values[3];
	char	   *details;
	int64		instance_id;

	a.received = topic_is(row->topic, FLYT_EVENT_RECEIVED);
	if ((!a.received && !topic_is(row->topic, FLYT_EVENT_DISPATCHED)) || !row->has_headers)
		return FLYT_DL_NOT_REDRIVABLE;
	/* a setting missing is the call's fault, not the message's: raise it */
	(void) flyt_topic_name(FLYT_EVENT_REGISTERED);

	edata = flyt_run_isolated(apply_again, &a);
	if (edata == NULL)
	{
		resolve(row->id, "redriven", by);
		instance_id = a.received ? a.instance_id : instance_of(row);
		record_action(row->id, "redriven", by, 0, instance_known(instance_id) ? instance_id : 0,
					  NULL, (Datum) 0, false);
		record_history(instance_id, "REDRIVEN", by, row, 0, NULL);
		ereport(LOG,
				(errmsg("flyt_instance: dead letter " INT64_FORMAT " (%s/%d/" INT64_FORMAT ") applied again by %s",
						row->id, row->topic, row->partition, row->offset, by)));
		return FLYT_DL_REDRIVEN;
	}

	/* not the message's fault: the operator tries again */
	if (flyt_consumer_error_is_transient(edata->sqlerrcode))
		ReThrowError(edata);

	details = failure_json(edata);
	flyt_plan(&still_dead_plan,
			  "UPDATE flyt.dead_letter SET failure_details = $2, failure_transience = $3, "
			  "  message_delivery_attempts = message_delivery_attempts OPERATOR(pg_catalog.+) 1 "
			  "WHERE id" EQ "$1",
			  3, argtypes);
	values[0] = Int64GetDatum(row->id);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(details));
	values[2] = CStringGetTextDatum("PERMANENT");
	flyt_execute(still_dead_plan, values, NULL, false, 0, SPI_OK_UPDATE);
	instance_id = instance_of(row);
	record_action(row->id, "redrive_failed", by, 0, instance_known(instance_id) ? instance_id : 0,
				  details, row->failure_details, true);
	record_history(instance_id, "REDRIVE_FAILED", by, row, 0, edata->message);

	/* as the consumer: a failed instance-received with readable flow headers */
	if (a.received)
	{
		ErrorData  *unreadable = flyt_run_isolated(read_flow_headers, &a);

		if (unreadable == NULL)
			flyt_outbox_enqueue_error(FLYT_ERROR_REGISTRATION, NULL, a.flow_headers);
		else
			FreeErrorData(unreadable);
	}
	/* never the payload: it may hold personal data */
	ereport(LOG,
			(errmsg("flyt_instance: dead letter " INT64_FORMAT " (%s/%d/" INT64_FORMAT ") failed again, redriven by %s: %s",
					row->id, row->topic, row->partition, row->offset, by, edata->message)));
	FreeErrorData(edata);
	return FLYT_DL_FAILED;
}

/* Redrives one dead letter; connected to SPI. */
static FlytDeadLetterOutcome
redrive_locked(int64 id, const char *by)
{
	DeadRow		row;

	if (!lock_dead_letter(id, &row))
		return FLYT_DL_NOT_FOUND;
	if (strcmp(row.status, "redriven") == 0)
		return FLYT_DL_ALREADY_REDRIVEN;
	if (strcmp(row.status, "discarded") == 0)
		return FLYT_DL_ALREADY_DISCARDED;
	return row.outbox ? redrive_outbox(&row, by) : redrive_consumed(&row, by);
}

/* Discards one dead letter; connected to SPI. */
static FlytDeadLetterOutcome
discard_locked(int64 id, const char *by)
{
	DeadRow		row;
	int64		instance_id;

	if (!lock_dead_letter(id, &row))
		return FLYT_DL_NOT_FOUND;
	if (strcmp(row.status, "redriven") == 0)
		return FLYT_DL_ALREADY_REDRIVEN;
	if (strcmp(row.status, "discarded") == 0)
		return FLYT_DL_ALREADY_DISCARDED;
	instance_id = instance_of(&row);
	resolve(id, "discarded", by);
	record_action(id, "discarded", by, 0, instance_known(instance_id) ? instance_id : 0,
				  NULL, (Datum) 0, false);
	record_history(instance_id, "DISCARDED", by, &row, 0, NULL);
	ereport(LOG,
			(errmsg("flyt_instance: dead letter " INT64_FORMAT " discarded by %s", id, by)));
	return FLYT_DL_DISCARDED;
}

FlytDeadLetterOutcome
flyt_dead_letter_redrive_one(int64 id, const char *by)
{
	FlytDeadLetterOutcome outcome;

	flyt_spi_connect();
	outcome = redrive_locked(id, by);
	flyt_spi_finish();
	return outcome;
}

FlytDeadLetterOutcome
flyt_dead_letter_discard_one(int64 id, const char *by)
{
	FlytDeadLetterOutcome outcome;

	flyt_spi_connect();
	outcome = discard_locked(id, by);
	flyt_spi_finish();
	return outcome;
}

static void
dead_letter_not_found(int64 id)
{
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("dead letter " INT64_FORMAT " not found", id)));
}

/* flyt_dead_letter_redrive(id bigint) → text */
Datum
flyt_dead_letter_redrive(PG_FUNCTION_ARGS)
{
	FlytDeadLetterOutcome outcome;

	flyt_require_argument(fcinfo, 0, "id");
	outcome = flyt_dead_letter_redrive_one(PG_GETARG_INT64(0), flyt_requested_by());
	if (outcome == FLYT_DL_NOT_FOUND)
		dead_letter_not_found(PG_GETARG_INT64(0));
	PG_RETURN_TEXT_P(cstring_to_text(flyt_dead_letter_outcome_name(outcome)));
}

/* flyt_dead_letter_discard(id bigint) → text */
Datum
flyt_dead_letter_discard(PG_FUNCTION_ARGS)
{
	FlytDeadLetterOutcome outcome;

	flyt_require_argument(fcinfo, 0, "id");
	outcome = flyt_dead_letter_discard_one(PG_GETARG_INT64(0), flyt_requested_by());
	if (outcome == FLYT_DL_NOT_FOUND)
		dead_letter_not_found(PG_GETARG_INT64(0));
	PG_RETURN_TEXT_P(cstring_to_text(flyt_dead_letter_outcome_name(outcome)));
}

/*
 * The bulk forms: the dead letters that match (status dead), oldest first
 * (so that outbox messages of one instance are queued again in their
 * order), each locked and acted on as the single form does.  Returns how
 * many were redriven or discarded.
 */
static int64
act_on_matching(FunctionCallInfo fcinfo, bool redrive)
{
	Filter		f;
	uint64		n;
	int64	   *ids;
	int64		done = 0;
	int64		failed = 0;
	int64		other = 0;
	char	   *by = flyt_requested_by();

	read_filter(fcinfo, -1, 5, &f);
	f.values[5] = CStringGetTextDatum("dead");
	f.nulls[5] = ' ';
	f.values[6] = BoolGetDatum(false);
	f.values[7] = Int32GetDatum(f.max_rows);

	flyt_spi_connect();
	flyt_plan(&match_plan,
			  "SELECT d.id FROM flyt.dead_letter d WHERE " FILTER_WHERE
			  "ORDER BY d.id LIMIT $8",
			  FILTER_ARGS + 2, filter_types);
	n = flyt_execute(match_plan, f.values, f.nulls, true, 0, SPI_OK_SELECT);
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
	{
		FlytDeadLetterOutcome outcome = redrive ? redrive_locked(ids[i], by) : discard_locked(ids[i], by);

		if (outcome == FLYT_DL_REDRIVEN || outcome == FLYT_DL_DISCARDED)
			done++;
		else if (outcome == FLYT_DL_FAILED)
			failed++;
		else
			other++;			/* acted on meanwhile, or not redrivable */
		CHECK_FOR_INTERRUPTS();
	}
	flyt_spi_finish();
	if (failed > 0 || other > 0)
		ereport(NOTICE,
				(errmsg("%s " INT64_FORMAT " of " INT64_FORMAT " matching dead letters",
						redrive ? "redrove" : "discarded", done, (int64) n),
				 errdetail(INT64_FORMAT " failed again and stay dead; " INT64_FORMAT " could not be %s (not redrivable, or redriven or discarded meanwhile).",
						   failed, other, redrive ? "redriven" : "discarded")));
	return done;
}

Datum
flyt_dead_letter_redrive_matching(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(act_on_matching(fcinfo, true));
}

Datum
flyt_dead_letter_discard_matching(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(act_on_matching(fcinfo, false));
}

/* ---------------------------------------------------------------------------
 * flyt_status() and flyt_metrics()
 * ---------------------------------------------------------------------------
 */

typedef struct Figures
{
	json_t	   *by_reason;		/* [{topic, reason, count}] of dead ones */
	int64		dead;
	int64		redriven;
	int64		redrive_failed;
	int64		discarded;
} Figures;

/*
 * The reason of a dead letter: the SQLSTATE of a consumed message, Kafka's
 * error of an outbox message.
 */
static void
read_figures(Figures *fig)
{
	MemoryContext caller = CurrentMemoryContext;
	uint64		n;
	bool		isnull;

	flyt_spi_connect();
	flyt_plan(&summary_plan,
			  "SELECT d.topic, COALESCE(d.failure_details OPERATOR(pg_catalog.->>) 'sqlstate', "
			  "  d.failure_details OPERATOR(pg_catalog.->>) 'errorMessage', ''), pg_catalog.count(*) "
			  "FROM flyt.dead_letter d WHERE d.status" EQ "'dead' GROUP BY 1, 2 ORDER BY 1, 2",
			  0, NULL);
	n = flyt_execute(summary_plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		fig->by_reason = json_array();
		fig->dead = 0;
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			int64		count = DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));

			json_array_append_new(fig->by_reason,
								  json_pack("{s:s, s:s, s:I}",
											"topic", SPI_getvalue(t, SPI_tuptable->tupdesc, 1),
											"reason", SPI_getvalue(t, SPI_tuptable->tupdesc, 2),
											"count", (json_int_t) count));
			fig->dead += count;
		}
		MemoryContextSwitchTo(spi);
	}
	flyt_plan(&counts_plan,
			  "SELECT pg_catalog.count(*) FILTER (WHERE action" EQ "'redriven'), "
			  "  pg_catalog.count(*) FILTER (WHERE action" EQ "'redrive_failed'), "
			  "  pg_catalog.count(*) FILTER (WHERE action" EQ "'discarded') "
			  "FROM flyt.dead_letter_action",
			  0, NULL);
	flyt_execute(counts_plan, NULL, NULL, true, 0, SPI_OK_SELECT);
	fig->redriven = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	fig->redrive_failed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	fig->discarded = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	flyt_spi_finish();
}

/* {"dead", "by_topic_and_reason", "redriven", "redrive_failed", "discarded"} */
json_t *
flyt_dead_letter_status(void)
{
	Figures		fig;

	read_figures(&fig);
	return json_pack("{s:I, s:o, s:I, s:I, s:I}",
					 "dead", (json_int_t) fig.dead,
					 "by_topic_and_reason", fig.by_reason,
					 "redriven", (json_int_t) fig.redriven,
					 "redrive_failed", (json_int_t) fig.redrive_failed,
					 "discarded", (json_int_t) fig.discarded);
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void
append_label(StringInfo buf, const char *value)
{
	for (const char *p = value; *p; p++)
	{
		if (*p == '\\' || *p == '"')
			appendStringInfoChar(buf, '\\');
		if (*p == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *p);
	}
}

void
flyt_dead_letter_metrics(StringInfo buf)
{
	Figures		fig;
	size_t		i;
	json_t	   *e;

	read_figures(&fig);
	appendStringInfoString(buf,
						   "# HELP flyt_instance_dead_letters_by_reason Dead letters not yet redriven or discarded, by topic and reason (SQLSTATE of a consumed message, Kafka's error of a produced one).\n"
						   "# TYPE flyt_instance_dead_letters_by_reason gauge\n");
	json_array_foreach(fig.by_reason, i, e)
	{
		appendStringInfoString(buf, "flyt_instance_dead_letters_by_reason{topic=\"");
		append_label(buf, json_string_value(json_object_get(e, "topic")));
		appendStringInfoString(buf, "\",reason=\"");
		append_label(buf, json_string_value(json_object_get(e, "reason")));
		appendStringInfo(buf, "\"} %lld\n", (long long) json_integer_value(json_object_get(e, "count")));
	}
	appendStringInfo(buf,
					 "# HELP flyt_instance_dead_letters_redriven_total Dead letters redriven: queued again or applied.\n"
					 "# TYPE flyt_instance_dead_letters_redriven_total counter\n"
					 "flyt_instance_dead_letters_redriven_total " INT64_FORMAT "\n"
					 "# HELP flyt_instance_dead_letters_redrive_failed_total Redrives of consumed messages that failed again.\n"
					 "# TYPE flyt_instance_dead_letters_redrive_failed_total counter\n"
					 "flyt_instance_dead_letters_redrive_failed_total " INT64_FORMAT "\n"
					 "# HELP flyt_instance_dead_letters_discarded_total Dead letters discarded.\n"
					 "# TYPE flyt_instance_dead_letters_discarded_total counter\n"
					 "flyt_instance_dead_letters_discarded_total " INT64_FORMAT "\n",
					 fig.redriven, fig.redrive_failed, fig.discarded);
	json_decref(fig.by_reason);
}
