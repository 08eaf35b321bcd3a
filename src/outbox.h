/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  Topic names and the transactional outbox (flyt.outbox).
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_OUTBOX_H
#define FLYT_OUTBOX_H

#include "postgres.h"

/* Produced events (SPEC section 4). */
#define FLYT_EVENT_REGISTERED "instance-registered"
#define FLYT_EVENT_RETRY "instance-requested-for-retry"
#define FLYT_EVENT_DELETED "instance-deleted"
#define FLYT_EVENT_REGISTRATION_ERROR "instance-registration-error"
#define FLYT_EVENT_RETRY_REQUEST_ERROR "instance-retry-request-error"

/* Consumed events. */
#define FLYT_EVENT_RECEIVED "instance-received"
#define FLYT_EVENT_DISPATCHED "instance-dispatched"

/* Value of the error events. */
#define FLYT_ERROR_EVENT_VALUE \
	"{\"errors\":[{\"errorCode\":\"FINT_FLYT_INSTANCE_SERVICE_GENERAL_SYSTEM_ERROR\",\"args\":{}}]}"

extern bool flyt_is_error_event(const char *event_name);
extern char *flyt_topic_name(const char *event_name);
extern char *flyt_instance_key(int64 instance_id);
extern int64 flyt_outbox_enqueue(const char *event_name, const char *key,
								 const char *flow_headers, const char *value);

#endif							/* FLYT_OUTBOX_H */
