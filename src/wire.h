/*-------------------------------------------------------------------------
 *
 * wire.h
 *	  The Kafka wire format of flyt_instance (SPEC section 4), in jansson:
 *	  validation of InstanceFlowHeaders and instances, the instance DTO,
 *	  timestamps and correlation ids.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_WIRE_H
#define FLYT_WIRE_H

#include "postgres.h"

#include "pg_jansson.h"

#include "datatype/timestamp.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

/*
 * Limits of what crosses the Kafka boundary (and the SQL functions that do
 * what the consumer does).  The largest instance, as JSON text, is the
 * setting flyt_instance.max_instance_bytes.
 */

/* Deepest nesting of instances inside objectCollectionPerKey. */
#define FLYT_MAX_INSTANCE_DEPTH 64

/*
 * Most JSON values (objects, arrays, strings, numbers, booleans, nulls) in
 * one instance.  Each costs a few hundred bytes of memory while it is
 * validated and stored, whatever its size as text: this bounds the memory
 * of one instance (about 100 MB at worst, see flyt_parse_instance).
 */
#define FLYT_MAX_INSTANCE_VALUES 100000

/* Largest flow headers, as JSON text, and their deepest nesting. */
#define FLYT_MAX_FLOW_HEADERS_BYTES 65536
#define FLYT_MAX_FLOW_HEADERS_DEPTH 32

/* Header names on every produced message. */
#define FLYT_HEADER_FLOW_HEADERS "flyt.instance-flow-headers"
#define FLYT_HEADER_EVENT_ID "flyt.event-id"
/* Added by fint-kafka's OriginHeaderProducerInterceptor to every record. */
#define FLYT_HEADER_ORIGIN_APPLICATION_ID "origin.application.id"
/* Added by Spring Kafka's JsonSerializer to every record with a value. */
#define FLYT_HEADER_TYPE_ID "__TypeId__"

/* Validated InstanceFlowHeaders; the string fields point into json. */
typedef struct FlytFlowHeaders
{
	json_t	   *json;			/* the whole object, unknown fields kept */
	int64		source_application_id;
	const char *source_application_integration_id;	/* NULL when absent */
	const char *source_application_instance_id; /* NULL when absent */
	bool		has_integration_id;
	int64		integration_id;
	bool		has_instance_id;
	int64		instance_id;
	pg_uuid_t	correlation_id;
} FlytFlowHeaders;

extern void flyt_wire_init(void);

extern void flyt_parse_flow_headers(const char *text, size_t len,
									FlytFlowHeaders *headers);
extern json_t *flyt_parse_instance(const char *text, size_t len);
extern void flyt_flow_headers_from_jsonb(Datum jsonb, FlytFlowHeaders *headers);
extern json_t *flyt_instance_from_jsonb(Datum jsonb);
extern json_t *flyt_parse_stored_json(const char *text, size_t len,
									  const char *what);

extern char *flyt_jsonb_to_text(Jsonb *jb, size_t *len);
extern json_t *flyt_jsonb_to_json(Jsonb *jb, const char *what);
extern Jsonb *flyt_json_to_jsonb(json_t *json);
extern char *flyt_json_dump(json_t *json);

extern char *flyt_instance_dto(int64 id, json_t *payload, TimestampTz created_at);
extern char *flyt_flow_headers_text(json_t *headers);
extern char *flyt_instance_dto_from_jsonb(int64 id, Jsonb *payload, TimestampTz created_at);
extern char *flyt_flow_headers_text_from_jsonb(Jsonb *headers, const pg_uuid_t *correlation_id);
extern void flyt_format_timestamp(TimestampTz ts, char *buf, size_t buflen);
extern void flyt_new_uuids(pg_uuid_t *uuids, int n);
extern void flyt_new_correlation_id(pg_uuid_t *uuid);
extern void flyt_uuid_to_text(const pg_uuid_t *uuid, char *buf);
extern void flyt_set_correlation_id(json_t *headers, const pg_uuid_t *uuid);

#endif							/* FLYT_WIRE_H */
