/*-------------------------------------------------------------------------
 *
 * pump.h
 *	  The outbox pump: flyt.outbox to Kafka, in order, at least once.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_PUMP_H
#define FLYT_PUMP_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "datatype/timestamp.h"

#include "breaker.h"

/* Cap of the redelivery backoff. */
#define FLYT_MAX_REDELIVERY_MS (5 * 60 * 1000)

typedef struct FlytDelivery
{
	int64		id;
	rd_kafka_resp_err_t err;
} FlytDelivery;

struct idhash_hash;

typedef struct FlytPump
{
	MemoryContext context;
	struct idhash_hash *inflight; /* outbox ids handed to the producer */
	int			in_flight;
	FlytDelivery *reports;		/* delivery reports not yet applied */
	int			nreports;
	int			reports_size;
	TimestampTz next_retry_at;	/* earliest row waiting for redelivery */
	bool		more;			/* the last scan stopped with rows left */
	bool		queue_full;		/* the producer's queue is full: wait for reports */
} FlytPump;

extern void flyt_pump_init(FlytPump *pump);
extern void flyt_pump_delivery_report(FlytPump *pump, const rd_kafka_message_t *msg);
extern void flyt_pump_apply_reports(FlytPump *pump, FlytBreaker *breaker);
extern int	flyt_pump_send(FlytPump *pump, rd_kafka_t *producer, int room);
extern void flyt_pump_forget_in_flight(FlytPump *pump);
extern bool flyt_pump_wants_scan(FlytPump *pump, TimestampTz now);

#endif							/* FLYT_PUMP_H */
