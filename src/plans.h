/*-------------------------------------------------------------------------
 *
 * plans.h
 *	  SPI plans prepared once per backend and kept.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLYT_PLANS_H
#define FLYT_PLANS_H

#include "postgres.h"

#include "executor/spi.h"
#include "storage/lock.h"

extern SPIPlanPtr flyt_plan(SPIPlanPtr *cache, const char *sql,
							int nargs, const Oid *argtypes);
extern void flyt_spi_connect(void);
extern void flyt_spi_finish(void);
extern Datum flyt_spi_finish_datum(Datum value, bool typbyval, int typlen);
extern void flyt_next_values(const char *sequence, int n, Datum *values);
extern int64 flyt_next_value(const char *sequence);
extern int64 flyt_sequence_last_value(const char *sequence);
extern VirtualTransactionId *flyt_sequence_holders(const char *sequence, int *n);
extern Datum flyt_array(Oid elemtype, Datum *elems, const bool *nulls, int n);
extern int	flyt_execute(SPIPlanPtr plan, const Datum *values, const char *nulls,
						 bool read_only, long count, int expected);
extern int	flyt_execute_by_id(SPIPlanPtr plan, const Datum *values, const char *nulls,
							   bool read_only, long count, int expected);

#endif							/* FLYT_PLANS_H */
