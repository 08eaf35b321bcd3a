/*-------------------------------------------------------------------------
 *
 * duration.c
 *	  Parsing of the duration strings used by flyt_instance settings.
 *
 * The original service took Spring Boot durations ("4d", "96h", "30m") and
 * ISO-8601 durations ("P4D", "PT96H"); both are accepted here.  Parsing never
 * throws: callers are GUC check hooks, which report the problem themselves.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "duration.h"

#define MS_PER_SECOND	INT64CONST(1000)
#define MS_PER_MINUTE	(60 * MS_PER_SECOND)
#define MS_PER_HOUR		(60 * MS_PER_MINUTE)
#define MS_PER_DAY		(24 * MS_PER_HOUR)
#define MS_PER_WEEK		(7 * MS_PER_DAY)

/* Largest duration accepted: about 292 million years would overflow; 100 years is plenty. */
#define MAX_DURATION_MS (INT64CONST(36525) * MS_PER_DAY)

/*
 * Reads an unsigned decimal number with an optional fraction at *p, advancing
 * *p.  Returns false when there are no digits.
 */
static bool
read_number(const char **p, double *value)
{
	const char *s = *p;
	double		v = 0;
	bool		digits = false;

	while (isdigit((unsigned char) *s))
	{
		v = v * 10 + (*s - '0');
		digits = true;
		s++;
	}
	if (*s == '.' || *s == ',')
	{
		double		scale = 0.1;

		s++;
		while (isdigit((unsigned char) *s))
		{
			v += (*s - '0') * scale;
			scale /= 10;
			digits = true;
			s++;
		}
	}
	if (!digits)
		return false;
	*p = s;
	*value = v;
	return true;
}

/* Parses "P[nW][nD][T[nH][nM][nS]]" (case-insensitive). */
static bool
parse_iso8601(const char *s, int64 *milliseconds, const char **problem)
{
	double		total = 0;
	bool		in_time = false;
	bool		any = false;
	char		last_unit = 0;
	const char *order_date = "WD";
	const char *order_time = "HMS";

	s++;						/* skip 'P' */
	while (*s)
	{
		double		v;
		char		unit;
		const char *order;
		const char *pos;

		if (toupper((unsigned char) *s) == 'T')
		{
			if (in_time)
			{
				*problem = "An ISO-8601 duration has at most one T";
				return false;
			}
			in_time = true;
			last_unit = 0;
			s++;
			if (*s == '\0')
			{
				*problem = "An ISO-8601 duration needs a value after T";
				return false;
			}
			continue;
		}
		if (!read_number(&s, &v))
		{
			*problem = "An ISO-8601 duration needs a number before each unit";
			return false;
		}
		unit = toupper((unsigned char) *s);
		order = in_time ? order_time : order_date;
		pos = unit ? strchr(order, unit) : NULL;
		if (pos == NULL)
		{
			*problem = in_time ? "ISO-8601 time units are H, M and S"
				: "ISO-8601 date units are W and D (years and months have no fixed length)";
			return false;
		}
		if (last_unit && strchr(order, last_unit) >= pos)
		{
			*problem = "ISO-8601 units must appear once each, largest first";
			return false;
		}
		last_unit = unit;
		switch (unit)
		{
			case 'W':
				total += v * MS_PER_WEEK;
				break;
			case 'D':
				total += v * MS_PER_DAY;
				break;
			case 'H':
				total += v * MS_PER_HOUR;
				break;
			case 'M':
				total += v * MS_PER_MINUTE;
				break;
			case 'S':
				total += v * MS_PER_SECOND;
				break;
		}
		any = true;
		s++;
		if (total > (double) MAX_DURATION_MS)
		{
			*problem = "The duration is longer than 100 years";
			return false;
		}
	}
	if (!any)
	{
		*problem = "An ISO-8601 duration needs at least one value";
		return false;
	}
	*milliseconds = (int64) (total + 0.5);
	return true;
}

/* Parses "<number><unit>" with unit ms, s, m, h or d. */
static bool
parse_simple(const char *s, int64 *milliseconds, const char **problem)
{
	double		v;
	int64		per;

	if (!read_number(&s, &v))
	{
		*problem = "A duration starts with a number";
		return false;
	}
	while (isspace((unsigned char) *s))
		s++;
	if (pg_strcasecmp(s, "ms") == 0)
		per = 1;
	else if (pg_strcasecmp(s, "s") == 0)
		per = MS_PER_SECOND;
	else if (pg_strcasecmp(s, "m") == 0 || pg_strcasecmp(s, "min") == 0)
		per = MS_PER_MINUTE;
	else if (pg_strcasecmp(s, "h") == 0)
		per = MS_PER_HOUR;
	else if (pg_strcasecmp(s, "d") == 0)
		per = MS_PER_DAY;
	else
	{
		*problem = (*s == '\0') ? "A duration needs a unit" : "Unknown duration unit";
		return false;
	}
	if (v * per > (double) MAX_DURATION_MS)
	{
		*problem = "The duration is longer than 100 years";
		return false;
	}
	*milliseconds = (int64) (v * per + 0.5);
	return true;
}

/*
 * Parses a duration such as "4d", "96h", "30m", "P4D" or "PT96H" into
 * milliseconds.  On failure returns false and points *problem at a static
 * description of what was wrong.  Zero is allowed; negative is not.
 */
bool
flyt_parse_duration(const char *text, int64 *milliseconds, const char **problem)
{
	const char *s = text;
	char		buf[64];
	size_t		len;

	*problem = NULL;
	if (text == NULL)
	{
		*problem = "A duration is required";
		return false;
	}
	while (isspace((unsigned char) *s))
		s++;
	len = strlen(s);
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	if (len == 0)
	{
		*problem = "A duration is required";
		return false;
	}
	if (len >= sizeof(buf))
	{
		*problem = "The duration is too long to be one";
		return false;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';

	if (buf[0] == '-')
	{
		*problem = "A duration cannot be negative";
		return false;
	}
	if (toupper((unsigned char) buf[0]) == 'P')
		return parse_iso8601(buf, milliseconds, problem);
	return parse_simple(buf, milliseconds, problem);
}

/*
 * Parses a whole number of milliseconds ("345600000").  An empty string is
 * not accepted here; callers treat it as "unset" before calling.
 */
bool
flyt_parse_milliseconds(const char *text, int64 *milliseconds, const char **problem)
{
	const char *s = text;
	int64		v = 0;

	*problem = NULL;
	while (isspace((unsigned char) *s))
		s++;
	if (!isdigit((unsigned char) *s))
	{
		*problem = "A whole, non-negative number of milliseconds is required";
		return false;
	}
	while (isdigit((unsigned char) *s))
	{
		v = v * 10 + (*s - '0');
		if (v > MAX_DURATION_MS)
		{
			*problem = "The duration is longer than 100 years";
			return false;
		}
		s++;
	}
	while (isspace((unsigned char) *s))
		s++;
	if (*s != '\0')
	{
		*problem = "A whole, non-negative number of milliseconds is required";
		return false;
	}
	*milliseconds = v;
	return true;
}
