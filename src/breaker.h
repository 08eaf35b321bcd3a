/*-------------------------------------------------------------------------
 *
 * breaker.h
 *	  The circuit breaker in front of the Kafka producer.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_BREAKER_H
#define FLYT_BREAKER_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "shared.h"

/* Consecutive delivery failures that open the circuit. */
#define FLYT_BREAKER_FAILURES 5
/* Longest the circuit stays open before it tries again. */
#define FLYT_BREAKER_MAX_OPEN_MS 60000

typedef struct FlytBreaker
{
	FlytCircuitState state;
	int			consecutive_failures;
	int			open_ms;		/* how long the current opening lasts */
	TimestampTz open_until;
	bool		reachable;		/* a broker answered a probe in this state */
} FlytBreaker;

extern void flyt_breaker_init(FlytBreaker *breaker);
extern int	flyt_breaker_room(FlytBreaker *breaker, TimestampTz now, int in_flight);
extern void flyt_breaker_success(FlytBreaker *breaker);
extern void flyt_breaker_failure(FlytBreaker *breaker, const char *reason);
extern void flyt_breaker_trip(FlytBreaker *breaker, const char *reason);
extern void flyt_breaker_reachable(FlytBreaker *breaker);
extern long flyt_breaker_wait_ms(FlytBreaker *breaker, TimestampTz now);

#endif							/* FLYT_BREAKER_H */
