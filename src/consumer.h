/*-------------------------------------------------------------------------
 *
 * consumer.h
 *	  Exactly-once consumption of instance-received and instance-dispatched.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_CONSUMER_H
#define FLYT_CONSUMER_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

/* Messages applied in one transaction at most. */
#define FLYT_CONSUMER_BATCH 500

typedef struct FlytOffset
{
	char	   *topic;
	int32		partition;
	int64		next_offset;
} FlytOffset;

typedef struct FlytConsumer
{
	MemoryContext context;
	List	   *offsets;		/* FlytOffset: what flyt.consumer_offset holds */
	bool		loaded;
	bool		subscribed;
	bool		more;			/* the last poll stopped with messages left */
	bool		failed;			/* a rebalance could not be completed */
	int			applying;		/* index of the message being applied, or one
								 * of the two below */
	bool		one_by_one;		/* store registrations one by one (the set
								 * of this batch failed) */
} FlytConsumer;

/* flyt_consumer_apply's consumer->applying outside one message's work */
#define FLYT_APPLYING_NONE (-1)
#define FLYT_APPLYING_SET (-2)	/* storing a set of registrations */

extern void flyt_consumer_init(FlytConsumer *consumer);
extern void flyt_consumer_load_offsets(FlytConsumer *consumer);
extern bool flyt_consumer_subscribe(FlytConsumer *consumer, rd_kafka_t *rk);
extern void flyt_consumer_rebalance(FlytConsumer *consumer, rd_kafka_t *rk,
									rd_kafka_resp_err_t err,
									rd_kafka_topic_partition_list_t *partitions);
extern int	flyt_consumer_poll(FlytConsumer *consumer, rd_kafka_t *rk,
							   rd_kafka_message_t **messages, int max);
extern void flyt_consumer_apply(FlytConsumer *consumer, rd_kafka_message_t **messages,
								int start, int end, int bad, ErrorData *bad_error);
extern bool flyt_consumer_error_is_transient(int sqlerrcode);
extern void flyt_consumer_committed(FlytConsumer *consumer, rd_kafka_t *rk,
									rd_kafka_message_t **messages, int n);
extern void flyt_consumer_reset(FlytConsumer *consumer);
extern int64 flyt_consumer_stored_offset(FlytConsumer *consumer, const char *topic,
										 int32 partition);

#endif							/* FLYT_CONSUMER_H */
