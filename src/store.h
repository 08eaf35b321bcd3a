/*-------------------------------------------------------------------------
 *
 * store.h
 *	  The instance store: registering, reading and deleting instances.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_STORE_H
#define FLYT_STORE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"

#include "wire.h"

extern bool flyt_error_is_systemic(int sqlerrcode);
extern ErrorData *flyt_run_isolated(void (*fn) (void *arg), void *arg);
extern void flyt_require_argument(FunctionCallInfo fcinfo, int argno,
								  const char *name);
/* What one registration writes (flyt_prepare_registration). */
typedef struct FlytRegistration
{
	int64		id;
	Datum		payload;		/* jsonb */
	Datum		flow_headers;	/* jsonb, with instanceId */
	Datum		columns[4];		/* see flyt_flow_header_columns */
	char		nulls[4];
	pg_uuid_t	correlation_id;
	char	   *key;			/* of instance-registered */
	char	   *wire_headers;	/* its flyt.instance-flow-headers */
	char	   *dto;			/* its value */
} FlytRegistration;

extern void flyt_prepare_registration(FlytFlowHeaders *headers, json_t *payload,
									  TimestampTz created_at, FlytRegistration *r);
extern void flyt_store_registrations(FlytRegistration *regs, int n, TimestampTz created_at);
extern int64 flyt_store_instance(FlytFlowHeaders *headers, json_t *payload);
extern void flyt_flow_header_columns(const FlytFlowHeaders *headers, Datum *values, char *nulls);
extern bool flyt_fetch_stored_instance(int64 id, bool lock, Jsonb **payload,
									   Jsonb **flow_headers, TimestampTz *created_at);
extern bool flyt_fetch_instance(int64 id, bool lock, json_t **payload,
								json_t **flow_headers, TimestampTz *created_at);
extern bool flyt_dispatch_instance(FlytFlowHeaders *headers);
extern void flyt_instance_not_found(int64 id);

#endif							/* FLYT_STORE_H */
