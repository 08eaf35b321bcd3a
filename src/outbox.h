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
/* flyt_instance.error_event_format = instance-error: both errors on one topic */
#define FLYT_EVENT_INSTANCE_ERROR "instance-error"

/* Consumed events. */
#define FLYT_EVENT_RECEIVED "instance-received"
#define FLYT_EVENT_DISPATCHED "instance-dispatched"

/* At most this many topics from flyt_produced_topics: three and two errors. */
#define FLYT_PRODUCED_TOPICS 5

/* The flow-headers request-reply with fint-flyt-history-service. */
#define FLYT_FLOW_HEADERS_RESOURCE "instance-flow-headers-for-registered-instance"

/* Where an error event comes from (InstanceErrorOrigin of fint-flyt-kafka). */
typedef enum FlytErrorOrigin
{
	FLYT_ERROR_REGISTRATION,
	FLYT_ERROR_RETRY_REQUEST
} FlytErrorOrigin;

extern bool flyt_is_error_event(const char *event_name);
extern char *flyt_topic_name(const char *event_name);
extern int	flyt_produced_topics(char **names);
extern char *flyt_reply_topic_name(void);
extern char *flyt_request_topic_name(void);
extern const char *flyt_value_type_id(const char *event_name);
extern int64 flyt_outbox_enqueue_error(FlytErrorOrigin origin, const char *key,
									   const char *flow_headers);
extern char *flyt_instance_key(int64 instance_id);
extern int64 flyt_outbox_enqueue(const char *event_name, const char *key,
								 const char *flow_headers, const char *value);
extern int64 flyt_outbox_enqueue_many(const char *event_name, int n, char **keys,
									  char **flow_headers, char **values);
extern void flyt_outbox_check_size(const char *event_name, const char *key,
								   const char *flow_headers, const char *value);

#endif							/* FLYT_OUTBOX_H */
