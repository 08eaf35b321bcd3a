#!/usr/bin/env bash
#
# script/asan.sh — `make asan`: the test suites against an AddressSanitizer
# build of the extension.
#
#   script/asan.sh                       regress isolation pgtap
#   script/asan.sh integration ...       any suites of test/run.sh
#   FLYT_ASAN_SUITES="regress pgtap"     the same, from make
#
# Debian's postgres is not built with ASan, so the ASan runtime is loaded
# into the postmaster with LD_PRELOAD (script/cluster.sh passes
# FLYT_PG_PRELOAD on to the server only; clients run as usual).  Without the
# preload the runtime would start inside the extension's dlopen, too late to
# see PostgreSQL's longjmp-based error recovery, and report false stack
# errors.  Preloading libasan alone deadlocks in glibc's bindtextdomain
# (see test/asan/swift_demangle.c): a one-symbol library after it avoids that.
#
# Steps: copy the working tree to a scratch directory, build it there with
# -fsanitize=address, install that build (the installed flyt_instance.so is
# the ASan one while the suites run), run the suites with the runtime
# preloaded and every report written to a log directory, and always
# reinstall the normal build at the end.  The run fails when a suite fails
# or when any process wrote an AddressSanitizer report; the reports are
# printed.  Leak detection is off: PostgreSQL frees by resetting memory
# contexts and leaves the rest to process exit.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
make=${MAKE:-make}
cc=${CC:-gcc}

if [ "$#" -eq 0 ]; then
	# shellcheck disable=SC2206  # word splitting of the suite list is wanted
	suites=(${FLYT_ASAN_SUITES:-regress isolation pgtap})
else
	suites=("$@")
fi

libasan=$("$cc" -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
	echo "asan: $cc has no libasan.so (Debian: libasan8, which gcc-12 brings)" >&2
	exit 1
fi
libasan=$(readlink -f "$libasan")

scratch=$(mktemp -d "${TMPDIR:-/tmp}/flyt_asan.XXXXXX")
reinstall() {
	# the normal build again, whatever happened
	"$make" --no-print-directory -s -C "$repo" install >/dev/null || true
	rm -rf "$scratch"
}
trap reinstall EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "=== asan: building in $scratch"
build=$scratch/build
mkdir -p "$build"
# the working tree as it is (tracked and untracked, not ignored)
git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C "$build"
"$make" --no-print-directory -s -C "$build" clean >/dev/null
"$make" --no-print-directory -s -C "$build" \
	COPT='-fsanitize=address -fno-omit-frame-pointer -O1' \
	LDFLAGS_SL='-fsanitize=address' all
"$cc" -shared -fPIC -O2 -o "$scratch/libswift_demangle.so" test/asan/swift_demangle.c
"$make" --no-print-directory -s -C "$build" install >/dev/null

logs=$scratch/logs
mkdir -p "$logs"
chmod 1777 "$scratch" "$logs"
export FLYT_PG_PRELOAD="$libasan $scratch/libswift_demangle.so"
export ASAN_OPTIONS="detect_leaks=0:log_path=$logs/asan:exitcode=86:detect_stack_use_after_return=0:print_suppressions=0"

echo "=== asan: suites ${suites[*]} with $libasan preloaded into the server"
rc=0
test/run.sh "${suites[@]}" || rc=$?

reports=$(grep -l 'ERROR: AddressSanitizer' "$logs"/asan.* 2>/dev/null || true)
if [ -n "$reports" ]; then
	echo "=== asan: AddressSanitizer reports:"
	for f in $reports; do
		printf -- '----- %s -----\n' "$(basename "$f")"
		head -n 60 "$f"
	done
	rc=1
else
	echo "=== asan: no AddressSanitizer report"
fi
# the preload itself must have worked: the server processes wrote nothing
# else either, and a report of a crash without ASan's words still counts
exit "$rc"
