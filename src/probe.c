/*-------------------------------------------------------------------------
 *
 * probe.c
 *	  Asking the Kafka brokers whether they answer, without waiting for it.
 *
 * A half-open circuit closes when a message is delivered; with nothing to
 * send, the worker asks the brokers for metadata instead, so that an idle
 * worker learns that Kafka is back.  librdkafka 2.0 has no asynchronous
 * metadata request, so the request runs on a thread of its own: the thread
 * calls librdkafka and nothing else (no PostgreSQL function, no palloc, no
 * ereport), stores the answer in an int and writes a byte to the worker's
 * wake-up pipe.  The worker reads the answer on its own thread and joins
 * the probe thread before the handle can be destroyed; the wait for that is
 * bounded by PROBE_TIMEOUT_MS.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "probe.h"

/* How long the metadata request waits for a broker. */
#define PROBE_TIMEOUT_MS 2000

static void *
probe_main(void *arg)
{
	FlytProbe  *probe = arg;
	const struct rd_kafka_metadata *metadata = NULL;
	rd_kafka_resp_err_t err;
	ssize_t		rc;

	/* locally known topics only: the answer is small, and any broker gives it */
	err = rd_kafka_metadata(probe->rk, 0, NULL, &metadata, PROBE_TIMEOUT_MS);
	if (metadata != NULL)
		rd_kafka_metadata_destroy(metadata);
	__atomic_store_n(&probe->result, err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : -1, __ATOMIC_RELEASE);
	rc = write(probe->wake_fd, "m", 1);
	(void) rc;					/* a full pipe wakes the worker anyway */
	return NULL;
}

/*
 * Starts a probe of rk's brokers; the answer wakes the worker through
 * wake_fd.  False when no thread could be started (tried again later).
 */
bool
flyt_probe_start(FlytProbe *probe, rd_kafka_t *rk, int wake_fd)
{
	sigset_t	all;
	sigset_t	old;
	int			rc;

	Assert(!probe->running);
	probe->rk = rk;
	probe->wake_fd = wake_fd;
	probe->result = 0;
	/* as with librdkafka's threads: signals are for the worker's thread only */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&probe->thread, NULL, probe_main, probe);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
	{
		ereport(LOG,
				(errmsg("flyt_instance: could not start a Kafka probe thread: %s", strerror(rc))));
		return false;
	}
	probe->running = true;
	return true;
}

/*
 * The answer of a finished probe (1 a broker answered, -1 none did), after
 * which another may start; 0 while none has finished.
 */
int
flyt_probe_result(FlytProbe *probe)
{
	int			result;

	if (!probe->running)
		return 0;
	result = __atomic_load_n(&probe->result, __ATOMIC_ACQUIRE);
	if (result != 0)
	{
		(void) pthread_join(probe->thread, NULL);
		probe->running = false;
	}
	return result;
}

/* Waits for a running probe (bounded by its timeout) and forgets it. */
void
flyt_probe_stop(FlytProbe *probe)
{
	if (!probe->running)
		return;
	(void) pthread_join(probe->thread, NULL);
	probe->running = false;
	probe->result = 0;
}
