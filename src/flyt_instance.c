/*-------------------------------------------------------------------------
 *
 * flyt_instance.c
 *	  Entry point of the flyt_instance extension.
 *
 * flyt_instance is the FINT Flyt instance service inside PostgreSQL.  Each
 * concern has its own file:
 *
 *	guc.c		the flyt_instance.* settings
 *	log_privacy.c	keeping the Kafka secrets out of the server log
 *	duration.c	the duration syntax of those settings
 *	wire.c		the Kafka wire format (jansson)
 *	plans.c		SPI plans prepared once and kept
 *	store.c		registering, reading and deleting instances
 *	retry.c		flyt_retry and flyt_retry_batch
 *	history.c	the per-instance event history
 *	outbox.c	topic names and the transactional outbox
 *	cleanup.c	retention cleanup, on demand and scheduled
 *	shared.c	state shared with the worker; waking it at commit
 *	status.c	flyt_status() and flyt_metrics()
 *	worker.c	the background worker's life and loop
 *	kafka.c		its librdkafka handles, served on its own thread
 *	pump.c		outbox to Kafka
 *	consumer.c	Kafka to the store, exactly once
 *	breaker.c	the circuit breaker in front of the producer
 *	admin.c		provisioning of the produced topics
 *	probe.c		asking the brokers whether they answer
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "miscadmin.h"

#include "guc.h"
#include "log_privacy.h"
#include "shared.h"
#include "wire.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	flyt_wire_init();
	flyt_log_privacy_init();
	flyt_define_settings();
	flyt_shared_init();
	if (process_shared_preload_libraries_in_progress && !IsBinaryUpgrade)
		flyt_worker_register();
}
