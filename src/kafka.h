/*-------------------------------------------------------------------------
 *
 * kafka.h
 *	  librdkafka handles of the background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_KAFKA_H
#define FLYT_KAFKA_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "outbox.h"

/* Callbacks the worker gives the handles; all run on the worker's thread. */
typedef struct FlytKafkaCallbacks
{
	void		(*delivery) (rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
	void		(*rebalance) (rd_kafka_t *rk, rd_kafka_resp_err_t err,
							  rd_kafka_topic_partition_list_t *partitions, void *opaque);
	void		(*error) (rd_kafka_t *rk, int err, const char *reason, void *opaque);
	int			(*stats) (rd_kafka_t *rk, char *json, size_t len, void *opaque);
} FlytKafkaCallbacks;

typedef struct FlytKafka
{
	rd_kafka_t *producer;
	rd_kafka_t *consumer;
	rd_kafka_queue_t *producer_queue;	/* delivery reports, logs, stats */
	rd_kafka_queue_t *consumer_queue;	/* messages, rebalances, logs, stats */
	rd_kafka_queue_t *admin_queue;	/* admin results */
	/* the producer's handles of the topics the worker sends to */
	rd_kafka_topic_t *topics[FLYT_PRODUCED_TOPICS];
	int			ntopics;
	int			wake_read_fd;	/* readable when a queue got an event */
	int			wake_write_fd;
	char	   *settings;		/* the settings the handles were made with */
} FlytKafka;

extern char *flyt_kafka_settings_signature(void);
extern bool flyt_kafka_open(FlytKafka *kafka, const FlytKafkaCallbacks *callbacks,
							void *opaque);
extern void flyt_kafka_close(FlytKafka *kafka, int budget_ms, bool flush);
extern void flyt_kafka_know_topics(FlytKafka *kafka, const char *const *names, int n);
extern void flyt_kafka_reap_abandoned(void);
extern int	flyt_kafka_abandoned_count(void);
extern void flyt_kafka_drain_wake_fd(FlytKafka *kafka);
extern void flyt_kafka_serve_logs(void);

#endif							/* FLYT_KAFKA_H */
