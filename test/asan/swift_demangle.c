/*
 * swift_demangle.c — a one-symbol library preloaded after libasan into the
 * postmaster by script/asan.sh (make asan).
 *
 * libasan initialises lazily; in Debian's postgres the first intercepted
 * call comes from libgpg-error's constructor, and libasan then looks up
 * swift_demangle with dlsym.  The failed lookup leaves glibc's dl error
 * state such that the next bindtextdomain() deadlocks on its lock.
 * Defining the symbol makes the lookup succeed.  libasan calls it only to
 * demangle Swift names in reports, and there are none: returning NULL
 * tells it to keep the name as it is.
 */
#include <stddef.h>

char	   *swift_demangle(const char *mangled, size_t length, char *out,
						   size_t *outlen, unsigned flags);

char *
swift_demangle(const char *mangled, size_t length, char *out, size_t *outlen,
			   unsigned flags)
{
	(void) mangled;
	(void) length;
	(void) out;
	(void) outlen;
	(void) flags;
	return NULL;
}
