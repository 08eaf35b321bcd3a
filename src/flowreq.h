/*-------------------------------------------------------------------------
 *
 * flowreq.h
 *	  Flow headers asked of fint-flyt-history-service: the original's
 *	  request-reply on Kafka, for instances stored without them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_FLOWREQ_H
#define FLYT_FLOWREQ_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

/* What became of one instance's request. */
typedef enum FlytFlowOutcome
{
	FLYT_FLOW_OUTCOME_ANSWERED,	/* headers stored on the instance */
	FLYT_FLOW_OUTCOME_UNKNOWN,	/* history-service has none (null reply) */
	FLYT_FLOW_OUTCOME_TIMEOUT,	/* no reply in flow_headers_timeout */
	FLYT_FLOW_OUTCOME_UNAVAILABLE	/* no worker, or Kafka is off */
} FlytFlowOutcome;

/* backends */
extern bool flyt_flow_can_ask(void);
extern void flyt_flow_headers_fetch(const int64 *ids, int n, FlytFlowOutcome *outcomes);
extern int	flyt_flow_headers_request_nowait(const int64 *ids, int n);
extern const char *flyt_flow_outcome_detail(FlytFlowOutcome outcome);

/* the worker */
extern void flyt_flow_requests_send(rd_kafka_t *producer);
extern bool flyt_flow_request_delivery(const rd_kafka_message_t *msg);

/* the worker's consumer, in the transaction of a batch */
extern void flyt_flow_reply_apply(const rd_kafka_message_t *msg);
extern void flyt_flow_replies_reset(void);
extern void flyt_flow_replies_committed(void);

#endif							/* FLYT_FLOWREQ_H */
