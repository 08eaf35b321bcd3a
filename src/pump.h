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
#include "storage/lock.h"

#include "breaker.h"

/*
 * The outbox is scanned at least this often even when nothing woke the
 * worker: rows of a transaction that could not wake it (a prepared one
 * committed later, a row written by hand) are found all the same.
 */
#define FLYT_PUMP_IDLE_SCAN_MS 1000

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
	struct idhash_hash *inflight; /* outbox ids handed to the producer;
								 * tag: the hash of the row's key, 0 none;
								 * size: row_size */
	struct idhash_hash *inflight_keys; /* key hash -> rows in flight (tag) */
	struct idhash_hash *blocked;	/* key hashes a scan must not send */
	struct idhash_hash *delayed;	/* rows a scan left to wait for their
								 * redelivery; tag: key hash, since: when */
	int			in_flight;
	int64		bytes_in_flight;	/* the rows' sizes (row_size) in flight */
	FlytDelivery *reports;		/* delivery reports not yet applied */
	int			nreports;
	int			reports_size;
	TimestampTz next_retry_at;	/* when a scan is due for rows left
								 * waiting: for their redelivery, for the
								 * synchronous standbys, for their commit
								 * to end */
	TimestampTz ending_since;	/* since when the scans have found rows
								 * whose commit was ending (until one
								 * read to the end without); 0 none */
	TimestampTz last_scan_at;	/* when the outbox was last scanned */
	bool		more;			/* the last scan stopped with rows left */
	bool		queue_full;		/* the producer's queue is full: wait for reports */

	/*
	 * Where scans start (see flyt_pump_send): every row with an id up to
	 * scan_from has been handed to the producer, or is in delayed.  Once
	 * the transactions in waiting[], which may still commit rows at or
	 * below next_from, have ended, it moves toward next_from as far as the
	 * scans after that have handed everything over.
	 */
	int64		scan_from;
	int64		max_sent_id;	/* the highest id ever handed over: none in
								 * flight is higher */
	int64		next_from;		/* 0: none proposed */
	VirtualTransactionId *waiting;
	int			nwaiting;
	bool		waiting_ended;
	TimestampTz last_full_scan_at;	/* the last scan from the head */
} FlytPump;

extern void flyt_pump_init(FlytPump *pump);
extern void flyt_pump_delivery_report(FlytPump *pump, const rd_kafka_message_t *msg);
extern void flyt_pump_apply_reports(FlytPump *pump, FlytBreaker *breaker);
extern int	flyt_pump_send(FlytPump *pump, rd_kafka_t *producer, int room);
extern void flyt_pump_forget_in_flight(FlytPump *pump);
extern bool flyt_pump_window_open(FlytPump *pump);
extern bool flyt_pump_wants_scan(FlytPump *pump, TimestampTz now);

#endif							/* FLYT_PUMP_H */
