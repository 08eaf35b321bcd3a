/*-------------------------------------------------------------------------
 *
 * probe.h
 *	  Asking the Kafka brokers whether they answer, without waiting for it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_PROBE_H
#define FLYT_PROBE_H

#include "postgres.h"

#include <pthread.h>

#include <librdkafka/rdkafka.h>

typedef struct FlytProbe
{
	pthread_t	thread;
	bool		running;		/* started and not yet joined */
	volatile int result;		/* written by the probe thread: 0 while it
								 * runs, 1 a broker answered, -1 none did */
	rd_kafka_t *rk;
	int			wake_fd;
} FlytProbe;

extern bool flyt_probe_start(FlytProbe *probe, rd_kafka_t *rk, int wake_fd);
extern int	flyt_probe_result(FlytProbe *probe);
extern void flyt_probe_stop(FlytProbe *probe);

#endif							/* FLYT_PROBE_H */
