/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The flyt_instance background worker.
 *
 * One worker per cluster, connected to flyt_instance.database.  It sleeps
 * in one WaitEventSet on its latch (set when a transaction that queued
 * outbox rows commits) and on a pipe that librdkafka's queues write to when
 * they receive something, so it never polls on a timer and never sleeps a
 * fixed time.  Each pass over its loop:
 *
 *	- follows the extension (absent, created, dropped) and the settings;
 *	- serves librdkafka's queues: delivery reports, rebalances, errors,
 *	  statistics, admin results and logs (all on this thread);
 *	- applies delivery reports, then a batch of consumed messages, then
 *	  hands more outbox rows to the producer as far as the circuit breaker
 *	  and flyt_instance.max_in_flight allow;
 *	- runs one batch of the scheduled cleanup when it is due;
 *	- publishes its state for flyt_status().
 *
 * Every database step is a short transaction of its own.  An error in a
 * pass is reported and the transaction rolled back; the Kafka handles stay
 * (the consumer seeks back to where a failed batch started, rows whose
 * delivery was not recorded are sent again), so nothing is lost and the
 * worker goes on after a backoff; the postmaster restarts it after anything
 * worse.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "pg_jansson.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "admin.h"
#include "breaker.h"
#include "cleanup.h"
#include "consumer.h"
#include "flowreq.h"
#include "guc.h"
#include "kafka.h"
#include "plans.h"
#include "probe.h"
#include "pump.h"
#include "store.h"
#include "shared.h"
#include "worker.h"

/* Longest sleep: the worker looks at the extension and settings this often. */
#define IDLE_WAKE_MS 1000
/* Wait before making new Kafka handles after making them failed. */
#define KAFKA_RETRY_MS 5000
/* Bounded flush of what is in flight when the worker stops. */
#define SHUTDOWN_FLUSH_MS 5000
/* Wait before probing the brokers again after a probe nobody answered. */
#define PROBE_RETRY_MS 1000
/* Closing the handles when nothing must be flushed (errors, settings). */
#define CLOSE_MS 2000
/* Wait after a failed pass: doubles while passes keep failing, up to this. */
#define ERROR_BACKOFF_MAX_MS 30000
/* What the worker's own transactions allow themselves. */
#define WORKER_LOCK_TIMEOUT "5s"
#define WORKER_STATEMENT_TIMEOUT_MS (5 * 60 * 1000)

typedef struct Worker
{
	FlytKafka	kafka;
	bool		kafka_open;
	bool		closing_kafka;	/* inside flyt_kafka_close */
	TimestampTz kafka_retry_at;
	FlytPump	pump;
	FlytConsumer consumer;
	FlytBreaker breaker;
	FlytAdmin	admin;
	FlytProbe	probe;
	int			error_backoff_ms;	/* 0 after a pass that went well */
	int			consume_backoff_ms; /* 0 after a batch that went well */
	TimestampTz consume_retry_at;	/* no consuming before (after a failure) */
	FlytCleanupRun cleanup;
	TimestampTz probe_next_at;	/* earliest next reachability probe */
	WaitEventSet *events;
	MemoryContext pass_context;
	bool		extension_ready;
	TimestampTz extension_checked_at;

	/* the consumed batch being applied, freed even when applying it fails */
	rd_kafka_message_t *batch[FLYT_CONSUMER_BATCH];
	int			nbatch;
	/* the step under way, so that an error is charged to it */
	enum
	{
		STEP_OTHER,
		STEP_CONSUME,
		STEP_CLEANUP
	}			step;

	/* what librdkafka's callbacks recorded, handled after the queue is served */
	char	   *stats[2];		/* latest statistics JSON, producer/consumer */
	bool		all_brokers_down;
	bool		fatal_error;
	bool		producer_up;
	bool		consumer_up;
} Worker;

static Worker worker;

static volatile sig_atomic_t got_sigterm = false;

static void
handle_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Registers the worker; called from _PG_init while shared_preload_libraries
 * is being processed.
 */
void
flyt_worker_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_ConsistentState;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "flyt_instance", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "flyt_worker_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "flyt_instance worker", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "flyt_instance worker", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* Publishes the worker's state (and why, when it is not running). */
static void
set_state(FlytWorkerState state, const char *reason)
{
	if (flyt_shared == NULL)
		return;
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	flyt_shared->state = state;
	strlcpy(flyt_shared->reason, reason ? reason : "", FLYT_REASON_LEN);
	LWLockRelease(flyt_shared->lock);
}

/* On exit, whatever the cause: the worker is gone. */
static void
worker_exit(int code, Datum arg)
{
	if (flyt_shared == NULL)
		return;
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	flyt_shared->worker_pid = 0;
	flyt_shared->worker_latch = NULL;
	flyt_shared->state = FLYT_WORKER_NOT_RUNNING;
	flyt_shared->connected = false;
	flyt_shared->in_flight = 0;
	flyt_shared->in_flight_bytes = 0;
	flyt_shared->subscribed = false;
	flyt_shared->assignment_waiting_since = 0;
	flyt_shared->npartitions = 0;
	flyt_shared->next_cleanup_at = 0;
	LWLockRelease(flyt_shared->lock);
}

/*
 * The memory context a step started in (the pass context), which the step
 * returns to: CommitTransactionCommand leaves TopMemoryContext current, and
 * whatever a pass allocated after a step would otherwise pile up there.
 */
static MemoryContext step_caller_context = NULL;

/*
 * The worker's transactions do not depend on the server's defaults: read
 * committed, writable, durable commits (the steps that may skip the wait
 * say so themselves), and a lock it cannot get within WORKER_LOCK_TIMEOUT
 * (a user's open transaction holding an instance) fails the step, which is
 * retried after a backoff instead of stopping every other step behind it.
 * Session-level, so that a reload of postgresql.conf does not undo them.
 */
static void
pin_settings(void)
{
	static const char *const pinned[][2] = {
		{"default_transaction_isolation", "read committed"},
		{"default_transaction_read_only", "off"},
		{"default_transaction_deferrable", "off"},
		{"synchronous_commit", "on"},
		{"lock_timeout", WORKER_LOCK_TIMEOUT},
		{"statement_timeout", "0"},	/* SPI does not arm it: see begin_step */
		{"idle_in_transaction_session_timeout", "0"},
	};

	for (size_t i = 0; i < lengthof(pinned); i++)
		(void) set_config_option(pinned[i][0], pinned[i][1], PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SET, true, 0, false);
}

/* Starts a transaction for one step, connected to SPI. */
static void
begin_step(const char *activity)
{
	step_caller_context = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	/* no step may run forever (SPI does not arm statement_timeout itself) */
	enable_timeout_after(STATEMENT_TIMEOUT, WORKER_STATEMENT_TIMEOUT_MS);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	flyt_spi_connect();
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * Lets the current step's transaction commit without waiting for its WAL to
 * reach disk.  Only for steps whose loss in a crash is harmless because it
 * is redone: recording deliveries (a lost delete sends the message again,
 * and consumers drop it by flyt.event-id) and cleanup batches (the next run
 * deletes the same instances).  Both may queue messages (a dead-lettered
 * retry's error event, instance-deleted); the pump sends no row before the
 * transaction that wrote it is durable (row_durable in pump.c), so a
 * crash never leaves Kafka holding an event of a change that was lost.
 * Consumed batches keep synchronous commit: their offsets are also
 * committed to Kafka, which must never get ahead of what the database has
 * durably applied.
 */
static void
commit_without_waiting(void)
{
	(void) set_config_option("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}


static void
end_step(void)
{
	flyt_spi_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	disable_timeout(STATEMENT_TIMEOUT, false);
	MemoryContextSwitchTo(step_caller_context);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Rebuilds the wait event set: latch, postmaster death, Kafka's pipe. */
static void
build_wait_events(void)
{
	if (worker.events != NULL)
		FreeWaitEventSet(worker.events);
	worker.events = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(worker.events, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(worker.events, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	if (worker.kafka_open)
		AddWaitEventToSet(worker.events, WL_SOCKET_READABLE, worker.kafka.wake_read_fd, NULL, NULL);
}

/* librdkafka callbacks: they record, the loop acts. */
static void
delivery_callback(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	if (!flyt_flow_request_delivery(msg))
		flyt_pump_delivery_report(&worker.pump, msg);
}

static void
rebalance_callback(rd_kafka_t *rk, rd_kafka_resp_err_t err,
				   rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
	/*
	 * A consumer that is closing, here or still in the background: let it
	 * go.  Nothing more may be asked of it from inside its close:
	 * rd_kafka_assignment() there waited forever for the consumer group's
	 * thread (seen as a worker that never turned Kafka off).
	 */
	if (rk != worker.kafka.consumer || worker.closing_kafka)
	{
		if (strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0)
		{
			rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, partitions);

			if (error != NULL)
				rd_kafka_error_destroy(error);
		}
		else
			(void) rd_kafka_assign(rk, NULL);
		return;
	}
	flyt_consumer_rebalance(&worker.consumer, rk, err, partitions);
}

static void
error_callback(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	if (rk != worker.kafka.producer && rk != worker.kafka.consumer)
		return;
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
		worker.all_brokers_down = true;
	else if (err == RD_KAFKA_RESP_ERR__FATAL)
		worker.fatal_error = true;
}

static int
stats_callback(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
	int			i = rd_kafka_type(rk) == RD_KAFKA_PRODUCER ? 0 : 1;

	if (rk != worker.kafka.producer && rk != worker.kafka.consumer)
		return 0;				/* a closing consumer's: librdkafka frees it */
	if (worker.stats[i] != NULL)
		rd_kafka_mem_free(rk, worker.stats[i]);
	worker.stats[i] = json;
	return 1;					/* keep it; freed above or after reading */
}

static const FlytKafkaCallbacks callbacks = {
	delivery_callback, rebalance_callback, error_callback, stats_callback
};

/*
 * Reads librdkafka's statistics: is any broker up, and how far ahead of the
 * consumer is each partition.
 */
static void
read_stats(int i, rd_kafka_t *rk)
{
	json_t	   *root;
	json_t	   *brokers;
	json_t	   *topics;
	json_t	   *broker;
	const char *name;
	bool		up = false;

	if (worker.stats[i] == NULL)
		return;
	root = json_loads(worker.stats[i], 0, NULL);
	rd_kafka_mem_free(rk, worker.stats[i]);
	worker.stats[i] = NULL;
	if (root == NULL)
		return;

	brokers = json_object_get(root, "brokers");
	json_object_foreach(brokers, name, broker)
	{
		const char *state = json_string_value(json_object_get(broker, "state"));

		if (state != NULL && strcmp(state, "UP") == 0)
			up = true;
	}
	if (i == 0)
		worker.producer_up = up;
	else
		worker.consumer_up = up;

	topics = json_object_get(root, "topics");
	if (i == 1 && topics != NULL && flyt_shared != NULL)
	{
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		for (int k = 0; k < flyt_shared->npartitions; k++)
		{
			FlytPartitionState *s = &flyt_shared->partitions[k];
			char		partition[16];
			json_t	   *p;
			json_t	   *hi;

			snprintf(partition, sizeof(partition), "%d", s->partition);
			p = json_object_get(json_object_get(json_object_get(topics, s->topic), "partitions"), partition);
			hi = json_object_get(p, "hi_offset");
			if (json_is_integer(hi) && json_integer_value(hi) >= 0)
				s->high_watermark = json_integer_value(hi);
		}
		LWLockRelease(flyt_shared->lock);
	}
	json_decref(root);
}

/* Closes the Kafka handles; apply says whether to record what was delivered. */
static void
close_kafka(bool apply)
{
	if (!worker.kafka_open)
		return;
	flyt_probe_stop(&worker.probe);
	worker.closing_kafka = true;
	flyt_kafka_close(&worker.kafka, apply ? SHUTDOWN_FLUSH_MS : CLOSE_MS, apply);
	worker.closing_kafka = false;
	worker.kafka_open = false;
	if (apply && worker.pump.nreports > 0)
	{
		begin_step("flyt_instance: recording deliveries");
		commit_without_waiting();
		flyt_pump_apply_reports(&worker.pump, &worker.breaker);
		end_step();
	}
	flyt_pump_forget_in_flight(&worker.pump);
	flyt_consumer_reset(&worker.consumer);
	/* statistics not read yet (rd_kafka_mem_free needs no handle) */
	for (int i = 0; i < 2; i++)
	{
		if (worker.stats[i] != NULL)
			rd_kafka_mem_free(NULL, worker.stats[i]);
		worker.stats[i] = NULL;
	}
	worker.producer_up = worker.consumer_up = false;
	worker.all_brokers_down = worker.fatal_error = false;
	build_wait_events();
	if (flyt_shared != NULL)
	{
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		flyt_shared->connected = false;
		flyt_shared->subscribed = false;
		flyt_shared->assignment_waiting_since = 0;
		flyt_shared->npartitions = 0;
		flyt_shared->in_flight = 0;
		flyt_shared->in_flight_bytes = 0;
		LWLockRelease(flyt_shared->lock);
	}
}

/* Makes the Kafka handles, subscribes and provisions the topics. */
static void
open_kafka(void)
{
	if (!flyt_kafka_open(&worker.kafka, &callbacks, NULL))
	{
		worker.kafka_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KAFKA_RETRY_MS);
		set_state(FLYT_WORKER_RUNNING, "the Kafka settings do not make a working client (see the server log)");
		return;
	}
	worker.kafka_open = true;
	build_wait_events();
	flyt_breaker_init(&worker.breaker);
	ereport(LOG,
			(errmsg("flyt_instance: connecting to Kafka at %s", flyt_kafka_bootstrap_servers)));
}

/*
 * Reads the stored offsets, subscribes and provisions the topics: after
 * the handles were made, and again after a pass that failed before it was
 * done (the handles survive database errors).
 */
static void
subscribe(void)
{
	begin_step("flyt_instance: reading consumer offsets");
	flyt_consumer_load_offsets(&worker.consumer);
	end_step();
	if (!flyt_consumer_subscribe(&worker.consumer, worker.kafka.consumer))
	{
		close_kafka(false);
		worker.kafka_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KAFKA_RETRY_MS);
		return;
	}
	flyt_admin_provision(&worker.admin, worker.kafka.producer, worker.kafka.admin_queue);
}

/* Serves every queue librdkafka wakes the worker for, without waiting. */
static void
serve_kafka(void)
{
	flyt_kafka_drain_wake_fd(&worker.kafka);
	(void) rd_kafka_poll(worker.kafka.producer, 0);
	flyt_admin_serve(&worker.admin, &worker.kafka);
	switch (flyt_probe_result(&worker.probe))
	{
		case 1:
			flyt_breaker_reachable(&worker.breaker);
			break;
		case -1:
			worker.probe_next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PROBE_RETRY_MS);
			break;
		default:
			break;
	}
	read_stats(0, worker.kafka.producer);
	read_stats(1, worker.kafka.consumer);
	flyt_kafka_serve_logs();

	if (worker.fatal_error)
	{
		char		reason[512] = "";
		const char *which = "producer";

		/* the producer (idempotence) or the consumer (a fenced static member) */
		if (rd_kafka_fatal_error(worker.kafka.producer, reason, sizeof(reason)) == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			which = "consumer";
			reason[0] = '\0';
			(void) rd_kafka_fatal_error(worker.kafka.consumer, reason, sizeof(reason));
		}
		ereport(LOG,
				(errmsg("flyt_instance: the Kafka %s failed fatally; making new clients in %d s", which,
						KAFKA_RETRY_MS / 1000),
				 errdetail_internal("%s", reason[0] ? reason : "librdkafka gave no reason")));
		close_kafka(false);
		worker.kafka_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KAFKA_RETRY_MS);
		return;
	}
	if (worker.all_brokers_down)
	{
		worker.all_brokers_down = false;
		worker.producer_up = false;
		flyt_breaker_trip(&worker.breaker, "all brokers are down");
	}
}

/* Is flyt_instance installed in this database?  Checked at most once a second. */
static bool
extension_present(TimestampTz now)
{
	bool		present;

	if (worker.extension_ready &&
		!TimestampDifferenceExceeds(worker.extension_checked_at, now, IDLE_WAKE_MS))
		return true;
	begin_step("flyt_instance: looking for the extension");
	present = OidIsValid(get_extension_oid("flyt_instance", true));
	if (present && !worker.extension_ready)
		flyt_cleanup_recover();
	end_step();
	worker.extension_checked_at = now;
	if (present && !worker.extension_ready)
		ereport(LOG,
				(errmsg("flyt_instance: extension found in database \"%s\"", flyt_database)));
	worker.extension_ready = present;
	return present;
}

/* Frees the consumed batch (the handle cannot be destroyed while it exists). */
static void
free_batch(void)
{
	for (int i = 0; i < worker.nbatch; i++)
		rd_kafka_message_destroy(worker.batch[i]);
	worker.nbatch = 0;
}

/* One batch of consumed messages, applied in one transaction. */
static void
consume(void)
{
	if (GetCurrentTimestamp() < worker.consume_retry_at)
		return;
	worker.nbatch = flyt_consumer_poll(&worker.consumer, worker.kafka.consumer,
									   worker.batch, FLYT_CONSUMER_BATCH);
	flyt_kafka_serve_logs();
	if (worker.consumer.failed)
	{
		ereport(LOG, (errmsg("flyt_instance: a consumer rebalance failed; reconnecting")));
		free_batch();
		close_kafka(false);
		return;
	}
	if (worker.nbatch == 0)
		return;
	/*
	 * Optimistically the whole batch in one transaction.  A message that
	 * fails rolls it back; the next transaction applies the messages before
	 * it again and dead-letters it, and the rest follows.  Every round
	 * either gets further or finds an earlier bad message, so it ends.
	 * Registrations are stored a run at a time (consumer.c); when storing a
	 * run fails, nobody knows which message was at fault, so the batch is
	 * applied again one message at a time, which finds it.  An error that
	 * is not the message's (systemic, transient) fails the batch instead:
	 * recover_from_error rewinds the consumer and backs off.
	 */
	worker.step = STEP_CONSUME;
	{
		MemoryContext pass_context = CurrentMemoryContext;
		volatile int start = 0;
		volatile int bad = -1;
		ErrorData  *volatile bad_error = NULL;

		worker.consumer.one_by_one = false;
		while (start < worker.nbatch)
		{
			PG_TRY();
			{
				/* durable: the offsets are also committed to Kafka afterwards */
				begin_step("flyt_instance: applying consumed messages");
				flyt_consumer_apply(&worker.consumer, worker.batch, start, worker.nbatch,
									bad, bad_error);
				end_step();
				/* the flow headers this round stored are answered now */
				flyt_flow_replies_committed();
				start = bad >= 0 ? bad + 1 : worker.nbatch;
				bad = -1;
				bad_error = NULL;
			}
			PG_CATCH();
			{
				int			failed = worker.consumer.applying;
				ErrorData  *edata;

				MemoryContextSwitchTo(pass_context);
				edata = CopyErrorData();
				if ((failed < 0 && (failed != FLYT_APPLYING_SET || worker.consumer.one_by_one)) ||
					(bad >= 0 && failed >= bad) ||
					flyt_error_is_systemic(edata->sqlerrcode) ||
					flyt_consumer_error_is_transient(edata->sqlerrcode))
					PG_RE_THROW();
				FlushErrorState();
				AbortCurrentTransaction();
				disable_timeout(STATEMENT_TIMEOUT, false);
				MemoryContextSwitchTo(pass_context);
				worker.consumer.applying = FLYT_APPLYING_NONE;
				if (failed == FLYT_APPLYING_SET)
				{
					/* the same again, each message by itself: that finds the culprit */
					ereport(LOG,
							(errmsg("flyt_instance: storing consumed registrations together failed (SQLSTATE %s); applying the batch one message at a time",
									unpack_sql_state(edata->sqlerrcode))));
					worker.consumer.one_by_one = true;
					FreeErrorData(edata);
				}
				else
				{
					bad = failed;
					bad_error = edata;
				}
			}
			PG_END_TRY();
		}
	}
	/* frees the messages */
	flyt_consumer_committed(&worker.consumer, worker.kafka.consumer, worker.batch, worker.nbatch);
	worker.step = STEP_OTHER;
	worker.nbatch = 0;
	worker.consume_backoff_ms = 0;
	worker.pump.more = true;	/* the batch queued events */
}

/* Publishes what flyt_status() shows of the worker. */
static void
publish(TimestampTz next_cleanup_at)
{
	if (flyt_shared == NULL)
		return;
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	flyt_shared->connected = worker.kafka_open &&
		(worker.producer_up || worker.consumer_up || worker.breaker.reachable);
	flyt_shared->in_flight = worker.pump.in_flight;
	flyt_shared->in_flight_bytes = worker.pump.bytes_in_flight;
	flyt_shared->next_cleanup_at = next_cleanup_at;
	LWLockRelease(flyt_shared->lock);
}

static long
ms_until(TimestampTz then, TimestampTz now)
{
	if (then <= now)
		return 0;
	return (long) ((then - now) / 1000) + 1;
}

/* One pass over everything; returns how long the worker may sleep (ms). */
static long
run_pass(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next_cleanup_at;
	long		timeout = IDLE_WAKE_MS;
	int			room = 0;

	if (!extension_present(now))
	{
		close_kafka(false);
		set_state(FLYT_WORKER_WAITING_FOR_EXTENSION,
				  psprintf("CREATE EXTENSION flyt_instance has not run in database \"%s\"", flyt_database));
		publish(0);
		return IDLE_WAKE_MS;
	}

	flyt_kafka_reap_abandoned();
	if (flyt_kafka_bootstrap_servers == NULL || flyt_kafka_bootstrap_servers[0] == '\0')
	{
		close_kafka(true);
		set_state(FLYT_WORKER_KAFKA_OFF, "kafka is not configured (flyt_instance.kafka_bootstrap_servers is empty)");
	}
	else if (flyt_org_id == NULL || flyt_org_id[0] == '\0')
	{
		/* every topic name starts with it: no client can do anything */
		close_kafka(true);
		set_state(FLYT_WORKER_KAFKA_OFF, "flyt_instance.org_id is not set, so Kafka stays off (topic names start with it)");
	}
	else
	{
		if (worker.kafka_open && strcmp(worker.kafka.settings, flyt_kafka_settings_signature()) != 0)
		{
			ereport(LOG, (errmsg("flyt_instance: Kafka settings changed; reconnecting")));
			close_kafka(true);
		}
		if (!worker.kafka_open && now >= worker.kafka_retry_at)
			open_kafka();
		if (worker.kafka_open && !worker.consumer.subscribed)
			subscribe();
		if (worker.kafka_open)
			set_state(FLYT_WORKER_RUNNING, NULL);
	}

	if (worker.kafka_open)
	{
		serve_kafka();
	}
	if (worker.kafka_open)
	{
		if (flyt_admin_outdated(&worker.admin))
			flyt_admin_provision(&worker.admin, worker.kafka.producer, worker.kafka.admin_queue);
		if (worker.pump.nreports > 0)
		{
			begin_step("flyt_instance: recording deliveries");
			commit_without_waiting();
			flyt_pump_apply_reports(&worker.pump, &worker.breaker);
			end_step();
		}
		consume();
		/* flow headers backends and the cleanup asked for (flowreq.c) */
		flyt_flow_requests_send(worker.kafka.producer);
	}
	if (worker.kafka_open)
	{
		room = flyt_breaker_room(&worker.breaker, now, worker.pump.in_flight);
		if (room > 0 && flyt_pump_wants_scan(&worker.pump, now))
		{
			begin_step("flyt_instance: sending outbox messages");
			(void) flyt_pump_send(&worker.pump, worker.kafka.producer, room);
			end_step();
			(void) rd_kafka_poll(worker.kafka.producer, 0);
		}

		/*
		 * A half-open circuit closes only when a message is delivered.  With
		 * nothing to send, ask the brokers something instead, so that an
		 * idle worker does not report Kafka down once it is back.
		 */
		if (worker.breaker.state == FLYT_CIRCUIT_HALF_OPEN && !worker.breaker.reachable &&
			worker.pump.in_flight == 0 && !worker.probe.running &&
			now >= worker.probe_next_at &&
			!flyt_probe_start(&worker.probe, worker.kafka.producer, worker.kafka.wake_write_fd))
			worker.probe_next_at = TimestampTzPlusMilliseconds(now, PROBE_RETRY_MS);
	}

	next_cleanup_at = flyt_cleanup_next_at(&worker.cleanup);
	if (now >= next_cleanup_at)
	{
		worker.step = STEP_CLEANUP;
		begin_step("flyt_instance: cleanup");
		commit_without_waiting();
		flyt_cleanup_step(&worker.cleanup);
		end_step();
		worker.step = STEP_OTHER;
		worker.pump.more = true;	/* the batch queued events */
		next_cleanup_at = flyt_cleanup_next_at(&worker.cleanup);
	}
	publish(next_cleanup_at);

	/* how long until something is due */
	now = GetCurrentTimestamp();
	timeout = Min(timeout, ms_until(next_cleanup_at, now));
	if (!worker.kafka_open && worker.kafka_retry_at > now &&
		flyt_kafka_bootstrap_servers != NULL && flyt_kafka_bootstrap_servers[0] != '\0')
		timeout = Min(timeout, ms_until(worker.kafka_retry_at, now));
	if (worker.kafka_open)
	{
		long		breaker_ms = flyt_breaker_wait_ms(&worker.breaker, now);

		if (worker.pump.nreports > 0)
			timeout = 0;
		if (worker.consumer.more)
			timeout = Min(timeout, ms_until(worker.consume_retry_at, now));
		if (worker.pump.more && !worker.pump.queue_full &&
			flyt_pump_window_open(&worker.pump) &&
			flyt_breaker_room(&worker.breaker, now, worker.pump.in_flight) > 0)
			timeout = 0;
		if (breaker_ms >= 0)
			timeout = Min(timeout, breaker_ms);
		if (worker.pump.next_retry_at != 0)
			timeout = Min(timeout, ms_until(worker.pump.next_retry_at, now));
		/* the next look at the outbox, when it may send at all */
		if (flyt_breaker_room(&worker.breaker, now, worker.pump.in_flight) > 0 &&
			flyt_pump_window_open(&worker.pump))
			timeout = Min(timeout, ms_until(TimestampTzPlusMilliseconds(worker.pump.last_scan_at,
																		FLYT_PUMP_IDLE_SCAN_MS), now));
	}
	return Max(timeout, 0);
}

/*
 * Puts the consumer back where the failed batch started, so that nothing
 * of it is skipped: per partition, at the batch's first offset or, when the
 * database holds a later one (the batch committed and only what followed
 * failed), there.  Seeking drops what librdkafka had fetched beyond.
 */
static void
rewind_consumer(void)
{
	rd_kafka_topic_partition_list_t *positions = rd_kafka_topic_partition_list_new(4);
	rd_kafka_error_t *error;

	for (int i = 0; i < worker.nbatch; i++)
	{
		rd_kafka_message_t *msg = worker.batch[i];
		const char *topic = rd_kafka_topic_name(msg->rkt);
		rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(positions, topic, msg->partition);

		if (p == NULL)
		{
			p = rd_kafka_topic_partition_list_add(positions, topic, msg->partition);
			p->offset = msg->offset;
		}
		else
			p->offset = Min(p->offset, msg->offset);
	}
	for (int i = 0; i < positions->cnt; i++)
	{
		rd_kafka_topic_partition_t *p = &positions->elems[i];
		int64		stored = flyt_consumer_stored_offset(&worker.consumer, p->topic, p->partition);

		p->offset = Max(p->offset, stored);
	}
	/* asynchronous; a partition revoked meanwhile is simply not sought */
	error = rd_kafka_seek_partitions(worker.kafka.consumer, positions, 0);
	if (error != NULL)
		rd_kafka_error_destroy(error);
	rd_kafka_topic_partition_list_destroy(positions);
}

/*
 * After an error in a pass: report it and roll back.  The Kafka handles
 * stay: the producer's messages in flight keep their delivery reports, the
 * consumer keeps its place in the group (a new member would wait for the
 * old one's session to end), and the circuit breaker keeps its state.
 * What the failed transaction did not commit is redone: the consumer's
 * offsets are read again from the database and a batch that failed is
 * consumed again from where it started; outbox rows whose deliveries were
 * not recorded stay queued and are sent again (consumers drop the repeat by
 * its flyt.event-id).  A failed cleanup
 * batch fails its run.  The next pass waits a second, doubling while
 * passes keep failing.
 */
static void
recover_from_error(void)
{
	bool		cleanup_failed = worker.step == STEP_CLEANUP;
	bool		consume_failed = worker.step == STEP_CONSUME;

	/* the pass context survives the abort; it is reset by the next pass */
	MemoryContextSwitchTo(worker.pass_context);
	EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	disable_timeout(STATEMENT_TIMEOUT, false);
	MemoryContextSwitchTo(worker.pass_context);
	pgstat_report_activity(STATE_IDLE, NULL);
	worker.step = STEP_OTHER;
	/* what librdkafka signalled so far must not cut the backoff short */
	if (worker.kafka_open)
		flyt_kafka_drain_wake_fd(&worker.kafka);
	if (consume_failed)
	{
		/*
		 * A batch that failed (say, on a lock a user's transaction holds)
		 * waits, doubling while it keeps failing; the rest of the worker
		 * goes on at once.
		 */
		worker.consume_backoff_ms = worker.consume_backoff_ms == 0 ? IDLE_WAKE_MS
			: Min(worker.consume_backoff_ms * 2, ERROR_BACKOFF_MAX_MS);
		worker.consume_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															  worker.consume_backoff_ms);
		worker.error_backoff_ms = 0;
	}
	else
	{
		worker.error_backoff_ms = worker.error_backoff_ms == 0 ? IDLE_WAKE_MS
			: Min(worker.error_backoff_ms * 2, ERROR_BACKOFF_MAX_MS);
		worker.extension_ready = false;
	}

	PG_TRY();
	{
		if (cleanup_failed)
		{
			begin_step("flyt_instance: recording a failed cleanup");
			flyt_cleanup_failed(&worker.cleanup, "a cleanup batch failed (see the server log)");
			end_step();
		}
		if (worker.kafka_open && worker.consumer.subscribed)
		{
			begin_step("flyt_instance: reading consumer offsets");
			flyt_consumer_load_offsets(&worker.consumer);
			end_step();
			if (worker.nbatch > 0)
				rewind_consumer();
		}
	}
	PG_CATCH();
	{
		/* the database is not there for us: start the Kafka side afresh too */
		MemoryContextSwitchTo(worker.pass_context);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(worker.pass_context);
		if (cleanup_failed)
			worker.cleanup.run_id = 0;
		free_batch();
		close_kafka(false);
		worker.kafka_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), worker.error_backoff_ms);
	}
	PG_END_TRY();
	free_batch();
}

/* Entry point of the background worker. */
void
flyt_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_sigterm);
	BackgroundWorkerUnblockSignals();

	if (flyt_shared != NULL)
	{
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		flyt_shared->worker_pid = MyProcPid;
		flyt_shared->worker_latch = MyLatch;
		flyt_shared->started_at = GetCurrentTimestamp();
		flyt_shared->state = FLYT_WORKER_STARTING;
		LWLockRelease(flyt_shared->lock);
	}
	before_shmem_exit(worker_exit, (Datum) 0);

	/* a standby only waits: nothing may be written there */
	while (RecoveryInProgress())
	{
		set_state(FLYT_WORKER_STANDBY, "the server is a standby");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 IDLE_WAKE_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		/*
		 * Exit code 1: the postmaster starts the worker again unless it is
		 * shutting down itself, so a lone SIGTERM on a standby does not
		 * leave the promoted server without a worker.
		 */
		if (got_sigterm)
			proc_exit(1);
	}

	set_state(FLYT_WORKER_STARTING, NULL);
	BackgroundWorkerInitializeConnection(flyt_database, NULL, 0);
	pgstat_report_appname("flyt_instance worker");
	pin_settings();

	memset(&worker, 0, sizeof(worker));
	worker.pass_context = AllocSetContextCreate(TopMemoryContext, "flyt_instance worker pass",
												ALLOCSET_DEFAULT_SIZES);
	flyt_pump_init(&worker.pump);
	flyt_consumer_init(&worker.consumer);
	flyt_breaker_init(&worker.breaker);
	worker.cleanup.worker_started_at = GetCurrentTimestamp();
	build_wait_events();

	while (!got_sigterm)
	{
		long		timeout;
		WaitEvent	events[3];
		int			nevents;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextReset(worker.pass_context);
		MemoryContextSwitchTo(worker.pass_context);
		PG_TRY();
		{
			timeout = run_pass();
			worker.error_backoff_ms = 0;
		}
		PG_CATCH();
		{
			recover_from_error();
			timeout = worker.error_backoff_ms;	/* 0 after a failed batch */
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);

		if (got_sigterm)
			break;
		nevents = WaitEventSetWait(worker.events, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
		{
			/*
			 * A committed transaction queued messages (or a signal came).
			 * Reset only a latch that was seen set: one set after the wait
			 * returned for another reason stays set for the next wait.
			 */
			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				worker.pump.more = true;
			}
		}
		/*
		 * Whatever was missed, the outbox is looked at every second anyway
		 * (flyt_pump_wants_scan): Kafka's queues wake the worker often, so
		 * a second without any wake-up is not to be waited for.
		 */
	}

	/*
	 * SIGTERM: hand over what is in flight, within a bound, and leave.  The
	 * exit code 1 makes the postmaster start the worker again after
	 * bgw_restart_time when it was not shutting down itself (someone ran
	 * pg_terminate_backend or kill -TERM on the worker alone).
	 */
	set_state(FLYT_WORKER_STOPPING, "the worker is stopping");
	PG_TRY();
	{
		close_kafka(true);
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
	}
	PG_END_TRY();
	proc_exit(1);
}
