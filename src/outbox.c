/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Topic names and the transactional outbox (flyt.outbox).
 *
 * Every message flyt_instance produces is first a row in flyt.outbox,
 * inserted in the transaction of the change that causes it; the background
 * worker sends it and deletes the row once the broker acknowledged it.  The
 * row holds the message exactly as it goes on the wire: topic, key, the
 * header values and the value.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "guc.h"
#include "outbox.h"
#include "plans.h"
#include "shared.h"
#include "wire.h"

PG_FUNCTION_INFO_V1(flyt_wire_json);
PG_FUNCTION_INFO_V1(flyt_wire_flow_headers);

static SPIPlanPtr enqueue_plan = NULL;

/* Is this one of the error events, produced on {org}.{ctx}.event.error.{name}? */
bool
flyt_is_error_event(const char *event_name)
{
	return strcmp(event_name, FLYT_EVENT_REGISTRATION_ERROR) == 0 ||
		strcmp(event_name, FLYT_EVENT_RETRY_REQUEST_ERROR) == 0 ||
		strcmp(event_name, FLYT_EVENT_INSTANCE_ERROR) == 0;
}

/* flyt_instance.org_id as it appears in topic names: dots become dashes. */
static char *
topic_org(void)
{
	char	   *org;

	if (flyt_org_id == NULL || flyt_org_id[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("flyt_instance.org_id is not set"),
				 errdetail("Kafka topic names start with the organisation id."),
				 errhint("Set flyt_instance.org_id in postgresql.conf, such as flyt_instance.org_id = 'fintlabs.no', and reload.")));
	org = pstrdup(flyt_org_id);
	for (char *p = org; *p; p++)
		if (*p == '.')
			*p = '-';
	return org;
}

/*
 * The topic of an event: {org}.{ctx}.event.{name}, or
 * {org}.{ctx}.event.error.{name} for error events, where {org} is
 * flyt_instance.org_id with dots replaced by dashes (fint-kafka's
 * EventTopicNameParameters and ErrorEventTopicNameParameters).
 */
char *
flyt_topic_name(const char *event_name)
{
	return psprintf("%s.%s.event.%s%s", topic_org(), flyt_domain_context,
					flyt_is_error_event(event_name) ? "error." : "", event_name);
}

/*
 * The topics the worker sends the extension's own events to with the
 * current settings (the error topics follow flyt_instance.error_event_format),
 * into names[] (at most FLYT_PRODUCED_TOPICS, palloc'd); returns how many.
 * The flow-headers requests' topic is history-service's, not among them.
 */
int
flyt_produced_topics(char **names)
{
	int			n = 0;

	names[n++] = flyt_topic_name(FLYT_EVENT_REGISTERED);
	names[n++] = flyt_topic_name(FLYT_EVENT_RETRY);
	names[n++] = flyt_topic_name(FLYT_EVENT_DELETED);
	if (flyt_error_event_format == FLYT_ERRORS_INSTANCE_ERROR)
		names[n++] = flyt_topic_name(FLYT_EVENT_INSTANCE_ERROR);
	else
	{
		names[n++] = flyt_topic_name(FLYT_EVENT_REGISTRATION_ERROR);
		names[n++] = flyt_topic_name(FLYT_EVENT_RETRY_REQUEST_ERROR);
	}
	Assert(n <= FLYT_PRODUCED_TOPICS);
	return n;
}

/*
 * The reply topic of the flow-headers request-reply:
 * {org}.{ctx}.reply.{application_id}.instance-flow-headers-for-registered-instance
 * (fint-kafka's ReplyTopicNameParameters).
 */
char *
flyt_reply_topic_name(void)
{
	return psprintf("%s.%s.reply.%s.%s", topic_org(), flyt_domain_context,
					flyt_application_id, FLYT_FLOW_HEADERS_RESOURCE);
}

/*
 * The request topic fint-flyt-history-service answers on:
 * {org}.{ctx}.request.instance-flow-headers-for-registered-instance.by.instance-id
 * (fint-kafka's RequestTopicNameParameters).  history-service creates it.
 */
char *
flyt_request_topic_name(void)
{
	return psprintf("%s.%s.request.%s.by.instance-id", topic_org(), flyt_domain_context,
					FLYT_FLOW_HEADERS_RESOURCE);
}

/*
 * The __TypeId__ header of an event's value: the Java class Spring Kafka's
 * JsonSerializer names for it in the original service.  NULL for events
 * without a value (instance-deleted), which carry no __TypeId__.
 */
const char *
flyt_value_type_id(const char *event_name)
{
	if (strcmp(event_name, FLYT_EVENT_REGISTERED) == 0 ||
		strcmp(event_name, FLYT_EVENT_RETRY) == 0)
		return "no.novari.flyt.instance.model.dtos.InstanceObjectDto";
	if (strcmp(event_name, FLYT_EVENT_REGISTRATION_ERROR) == 0 ||
		strcmp(event_name, FLYT_EVENT_RETRY_REQUEST_ERROR) == 0)
		return "no.novari.flyt.kafka.model.ErrorCollection";
	if (strcmp(event_name, FLYT_EVENT_INSTANCE_ERROR) == 0)
		return "no.novari.flyt.kafka.model.InstanceErrorEvent";
	return NULL;
}

/* The ErrorCollection of every error event the service sends. */
#define ERROR_COLLECTION \
	"{\"errors\":[{\"errorCode\":\"FINT_FLYT_INSTANCE_SERVICE_GENERAL_SYSTEM_ERROR\",\"args\":null}]}"

/*
 * Queues an error event in the format flyt_instance.error_event_format
 * names: legacy sends a bare ErrorCollection on instance-registration-error
 * or instance-retry-request-error (what every history-service version
 * reads); instance-error sends {"name": "REGISTRATION"|"RETRY_REQUEST",
 * "errors": ErrorCollection} on instance-error, as the original does since
 * 2026-07.  args is null, as the original's Error.builder() leaves it.
 */
int64
flyt_outbox_enqueue_error(FlytErrorOrigin origin, const char *key, const char *flow_headers)
{
	bool		registration = (origin == FLYT_ERROR_REGISTRATION);

	if (flyt_error_event_format == FLYT_ERRORS_INSTANCE_ERROR)
		return flyt_outbox_enqueue(FLYT_EVENT_INSTANCE_ERROR, key, flow_headers,
								   registration ?
								   "{\"name\":\"REGISTRATION\",\"errors\":" ERROR_COLLECTION "}" :
								   "{\"name\":\"RETRY_REQUEST\",\"errors\":" ERROR_COLLECTION "}");
	return flyt_outbox_enqueue(registration ? FLYT_EVENT_REGISTRATION_ERROR : FLYT_EVENT_RETRY_REQUEST_ERROR,
							   key, flow_headers, ERROR_COLLECTION);
}

/* The Kafka key of an instance's events: its id as text. */
char *
flyt_instance_key(int64 instance_id)
{
	return psprintf(INT64_FORMAT, instance_id);
}

/* librdkafka's default message.max.bytes */
#define DEFAULT_MESSAGE_MAX_BYTES 1000000
/* what a record adds to key, value and headers: names, sizes, the event id */
#define RECORD_OVERHEAD 512

/*
 * The largest message the producer will send: message.max.bytes of
 * kafka_config, or librdkafka's default.  Read again only when the setting
 * changed.
 */
static int64
message_max_bytes(void)
{
	static char *parsed_config = NULL;
	static int64 max_bytes = DEFAULT_MESSAGE_MAX_BYTES;

	if (parsed_config == NULL || strcmp(parsed_config, flyt_kafka_config) != 0)
	{
		char	   *value = flyt_kafka_config_get("message.max.bytes");

		max_bytes = DEFAULT_MESSAGE_MAX_BYTES;
		if (value != NULL)
		{
			char	   *end;
			long long	v = strtoll(value, &end, 10);

			/* the check hook let librdkafka validate it */
			if (*end == '\0' && v > 0)
				max_bytes = v;
			pfree(value);
		}
		if (parsed_config != NULL)
			pfree(parsed_config);
		parsed_config = MemoryContextStrdup(TopMemoryContext, flyt_kafka_config);
	}
	return max_bytes;
}

/*
 * Refuses to register an instance whose instance-registered the producer
 * could never send: queued, it would fail every delivery and end as a dead
 * letter, and so would every retry of it.  SQLSTATE 54000, as for an
 * instance over max_instance_bytes: flyt_register_instance fails with it,
 * and the consumer dead-letters such a message at once.  Only the
 * registration is checked: the events that follow are the same size or
 * small, and an error event must never fail to be queued.
 */
void
flyt_outbox_check_size(const char *event_name, const char *key, const char *flow_headers,
				   const char *value)
{
	int64		size = RECORD_OVERHEAD;
	int64		limit = message_max_bytes();

	size += key ? strlen(key) : 0;
	size += flow_headers ? strlen(flow_headers) : 0;
	size += value ? strlen(value) : 0;
	if (size <= limit)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("the %s message would be too large for Kafka", event_name),
			 errdetail("It would be about " INT64_FORMAT " bytes; the producer sends at most " INT64_FORMAT " (message.max.bytes).",
					   size, limit),
			 errhint("Raise message.max.bytes in flyt_instance.kafka_config and max.message.bytes of the topics, or lower flyt_instance.max_instance_bytes so that such instances are refused when they arrive."),
			 errhidestmt(true)));
}

/*
 * flyt.wire_json(jsonb) → text: the compact JSON text written on the wire,
 * for the set-based statements that queue messages themselves.
 */
Datum
flyt_wire_json(PG_FUNCTION_ARGS)
{
	json_t	   *json = flyt_jsonb_to_json(PG_GETARG_JSONB_P(0), "value");

	PG_RETURN_TEXT_P(cstring_to_text(flyt_json_dump(json)));
}

/*
 * flyt.wire_flow_headers(jsonb) → text: the flyt.instance-flow-headers
 * header of stored flow headers (flyt_flow_headers_text), for the set-based
 * statements that queue messages themselves (cleanup).
 */
Datum
flyt_wire_flow_headers(PG_FUNCTION_ARGS)
{
	Jsonb	   *headers = PG_GETARG_JSONB_P(0);
	char	   *text = flyt_flow_headers_text_from_jsonb(headers, NULL);

	if (text == NULL)
		text = flyt_flow_headers_text(flyt_jsonb_to_json(headers, "flow headers"));
	PG_RETURN_TEXT_P(cstring_to_text(text));
}

/* The headers column of a queued message, from its flow headers (may be NULL). */
#define HEADERS_EXPRESSION(flow_headers) \
	"CASE WHEN " flow_headers " IS NULL " \
	"  THEN pg_catalog.jsonb_build_object('" FLYT_HEADER_EVENT_ID "', pg_catalog.gen_random_uuid()::pg_catalog.text) " \
	"  ELSE pg_catalog.jsonb_build_object('" FLYT_HEADER_FLOW_HEADERS "', " flow_headers ", " \
	"                                     '" FLYT_HEADER_EVENT_ID "', pg_catalog.gen_random_uuid()::pg_catalog.text) END"

/*
 * Queues n messages of one event in flyt.outbox, in the order given, with
 * one statement; returns the id of the first (the others follow in order).
 * Each message's flyt.event-id header is a random UUID stored with the row,
 * so that a redelivery repeats it and no other message ever has it: an id
 * that left the database is unique forever, whatever a crash or a failover
 * does to sequences.  keys[i] (the instance id, see flyt_instance_key),
 * flow_headers[i] (the flyt.instance-flow-headers header) and values[i] may
 * be NULL.  The caller is connected to SPI.
 */
int64
flyt_outbox_enqueue_many(const char *event_name, int n, char **keys,
						 char **flow_headers, char **values)
{
	static const Oid argtypes[] = {TEXTOID, TEXTOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	static const Oid one_types[] = {TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID};
	static SPIPlanPtr one_plan = NULL;
	char	  **columns[3] = {keys, flow_headers, values};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	Datum	   *elems;
	bool	   *isnull;
	int64		first = 0;

	if (n == 0)
		return 0;
	args[0] = CStringGetTextDatum(event_name);
	args[1] = CStringGetTextDatum(flyt_topic_name(event_name));
	if (n == 1)
	{
		/* the common case (a retry, an event), without arrays */
		flyt_plan(&one_plan,
				  "INSERT INTO flyt.outbox (id, event_name, topic, key, headers, value) "
				  "VALUES ($3, $1, $2, $4, " HEADERS_EXPRESSION("$5") ", $6)",
				  6, one_types);
		first = flyt_next_value("outbox_id_seq");
		args[2] = Int64GetDatum(first);
		for (int c = 0; c < 3; c++)
		{
			char	   *text = columns[c] != NULL ? columns[c][0] : NULL;

			nulls[3 + c] = text == NULL ? 'n' : ' ';
			args[3 + c] = text != NULL ? CStringGetTextDatum(text) : (Datum) 0;
		}
		flyt_execute(one_plan, args, nulls, false, 0, SPI_OK_INSERT);
		flyt_wake_worker_at_commit();
		return first;
	}

	flyt_plan(&enqueue_plan,
			  "INSERT INTO flyt.outbox (id, event_name, topic, key, headers, value) "
			  "SELECT u.id, $1, $2, u.key, " HEADERS_EXPRESSION("u.flow_headers") ", u.value "
			  "FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
			  "  pg_catalog.unnest($6)) AS u (id, key, flow_headers, value)",
			  6, argtypes);
	elems = palloc(sizeof(Datum) * n);
	isnull = palloc(sizeof(bool) * n);
	flyt_next_values("outbox_id_seq", n, elems);
	first = DatumGetInt64(elems[0]);
	args[2] = flyt_array(INT8OID, elems, NULL, n);
	for (int c = 0; c < 3; c++)
	{
		for (int i = 0; i < n; i++)
		{
			char	   *text = columns[c] != NULL ? columns[c][i] : NULL;

			isnull[i] = text == NULL;
			elems[i] = text != NULL ? CStringGetTextDatum(text) : (Datum) 0;
		}
		args[3 + c] = flyt_array(TEXTOID, elems, isnull, n);
	}
	flyt_execute(enqueue_plan, args, NULL, false, 0, SPI_OK_INSERT);
	flyt_wake_worker_at_commit();
	return first;
}

/* Queues one message in flyt.outbox and returns its id (see flyt_outbox_enqueue_many). */
int64
flyt_outbox_enqueue(const char *event_name, const char *key,
					const char *flow_headers, const char *value)
{
	return flyt_outbox_enqueue_many(event_name, 1, (char **) &key, (char **) &flow_headers,
									(char **) &value);
}
