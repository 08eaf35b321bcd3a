/*-------------------------------------------------------------------------
 *
 * breaker.c
 *	  The circuit breaker in front of the Kafka producer (seed 003).
 *
 * CLOSED: messages flow.  FLYT_BREAKER_FAILURES consecutive delivery
 * failures, or all brokers down, open the circuit.  OPEN: nothing is sent
 * (the outbox keeps everything) until the open interval has passed; the
 * interval starts at flyt_instance.redelivery_millis and doubles each time a
 * probe fails, up to FLYT_BREAKER_MAX_OPEN_MS.  HALF_OPEN: one message, the
 * oldest, is sent alone; its success closes the circuit, its failure opens
 * it again.  With nothing to send, the worker probes the brokers instead
 * (probe.c); an answer marks a half-open circuit reachable, which
 * flyt_status() reports as UP.  Every transition is published for
 * flyt_status().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "breaker.h"
#include "guc.h"

/* Records a transition in shared memory (a ring of recent events). */
static void
transition(FlytBreaker *breaker, FlytCircuitState state, const char *reason)
{
	breaker->state = state;
	breaker->reachable = false;
	if (flyt_shared == NULL)
		return;
	LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
	{
		FlytCircuitEvent *ev = &flyt_shared->circuit_events[flyt_shared->circuit_event_count % FLYT_CIRCUIT_EVENTS];

		ev->at = GetCurrentTimestamp();
		ev->state = state;
		strlcpy(ev->reason, reason, FLYT_REASON_LEN);
		flyt_shared->circuit_event_count++;
		flyt_shared->circuit = state;
		flyt_shared->circuit_reachable = false;
	}
	LWLockRelease(flyt_shared->lock);
	ereport(LOG,
			(errmsg("flyt_instance: Kafka circuit %s: %s", flyt_circuit_state_name(state), reason)));
}

void
flyt_breaker_init(FlytBreaker *breaker)
{
	memset(breaker, 0, sizeof(*breaker));
	breaker->state = FLYT_CIRCUIT_CLOSED;
	if (flyt_shared != NULL)
	{
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		flyt_shared->circuit = FLYT_CIRCUIT_CLOSED;
		flyt_shared->circuit_reachable = false;
		LWLockRelease(flyt_shared->lock);
	}
}

static void
open_circuit(FlytBreaker *breaker, const char *reason)
{
	if (breaker->state == FLYT_CIRCUIT_HALF_OPEN)
		breaker->open_ms = Min(breaker->open_ms * 2, FLYT_BREAKER_MAX_OPEN_MS);
	else
		breaker->open_ms = Min(flyt_redelivery_millis, FLYT_BREAKER_MAX_OPEN_MS);
	breaker->open_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), breaker->open_ms);
	transition(breaker, FLYT_CIRCUIT_OPEN, reason);
}

/*
 * How many more messages may be in flight now: unlimited when
 * closed, none when open, and one probe when half open.
 */
int
flyt_breaker_room(FlytBreaker *breaker, TimestampTz now, int in_flight)
{
	if (breaker->state == FLYT_CIRCUIT_OPEN && now >= breaker->open_until)
		transition(breaker, FLYT_CIRCUIT_HALF_OPEN, "trying one message");
	switch (breaker->state)
	{
		case FLYT_CIRCUIT_CLOSED:
			return PG_INT32_MAX;
		case FLYT_CIRCUIT_HALF_OPEN:
			return in_flight == 0 ? 1 : 0;
		case FLYT_CIRCUIT_OPEN:
			return 0;
	}
	return 0;
}

/* A message was delivered. */
void
flyt_breaker_success(FlytBreaker *breaker)
{
	breaker->consecutive_failures = 0;
	if (breaker->state != FLYT_CIRCUIT_CLOSED)
		transition(breaker, FLYT_CIRCUIT_CLOSED, "a message was delivered");
	breaker->open_ms = 0;
}

/* A delivery failed. */
void
flyt_breaker_failure(FlytBreaker *breaker, const char *reason)
{
	breaker->consecutive_failures++;
	if (breaker->state == FLYT_CIRCUIT_HALF_OPEN ||
		(breaker->state == FLYT_CIRCUIT_CLOSED &&
		 breaker->consecutive_failures >= FLYT_BREAKER_FAILURES))
		open_circuit(breaker, reason);
}

/* Opens the circuit at once (all brokers down). */
void
flyt_breaker_trip(FlytBreaker *breaker, const char *reason)
{
	if (breaker->state != FLYT_CIRCUIT_OPEN)
		open_circuit(breaker, reason);
}

/*
 * A broker answered a probe while the circuit is half open and nothing is
 * waiting to be sent: Kafka is reachable.  The circuit stays half open (only
 * a delivered message closes it), but flyt_status() counts it as up.
 */
void
flyt_breaker_reachable(FlytBreaker *breaker)
{
	if (breaker->reachable || breaker->state != FLYT_CIRCUIT_HALF_OPEN)
		return;
	breaker->reachable = true;
	if (flyt_shared != NULL)
	{
		LWLockAcquire(flyt_shared->lock, LW_EXCLUSIVE);
		flyt_shared->circuit_reachable = true;
		LWLockRelease(flyt_shared->lock);
	}
	ereport(LOG,
			(errmsg("flyt_instance: Kafka circuit HALF_OPEN: the brokers answer; the next message will close it")));
}

/* Milliseconds until the breaker wants attention again; -1 for never. */
long
flyt_breaker_wait_ms(FlytBreaker *breaker, TimestampTz now)
{
	if (breaker->state != FLYT_CIRCUIT_OPEN)
		return -1;
	if (now >= breaker->open_until)
		return 0;
	return (long) ((breaker->open_until - now) / 1000) + 1;
}
