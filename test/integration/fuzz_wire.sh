#!/usr/bin/env bash
#
# fuzz_wire.sh — the libFuzzer target for the wire parsing (test/fuzz/,
# issue 10) for a bounded time: builds it with clang, then fuzzes for
# FLYT_FUZZ_SECONDS (default 20) from the seeds (test/fuzz/seeds and the
# fixtures), in a scratch corpus.  Fails when the target cannot be built,
# when it finds a crash (AddressSanitizer, UndefinedBehaviorSanitizer, or a
# broken promise of wire.c, see test/fuzz/fuzz_wire.c: the crashing input
# is printed in base64), or when it ran too few inputs to mean anything.
# `make fuzz` runs it longer, with a corpus that is kept.
#
# Needs clang-14 (or clang) and libFuzzer (Debian: clang-14
# libclang-rt-14-dev).  No cluster, no broker.  Prints ok/not ok lines and
# "N passed, M failed"; exit status non-zero on any failure.

set -euo pipefail

# shellcheck source=test/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_TO_FUZZ=${FLYT_FUZZ_SECONDS:-20}
FUZZ_DIR=$FLYT_REPO/test/fuzz

WORK=$(mktemp -d "${TMPDIR:-/tmp}/flyt_fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

clang=$(command -v clang-14 || command -v clang || true)
if [ -z "$clang" ]; then
	bail "clang is installed" "install it: apt-get install -y clang-14 libclang-rt-14-dev"
fi
pass "clang is installed ($clang)"

if make --no-print-directory -C "$FUZZ_DIR" CLANG="$clang" fuzz_wire >"$WORK/build.log" 2>&1; then
	pass "fuzz_wire builds"
else
	fail "fuzz_wire builds" "$(tail -n 20 "$WORK/build.log")" \
		"(libFuzzer is in libclang-rt-14-dev; libpgcommon.a in postgresql-server-dev-15)"
	finish
fi

mkdir "$WORK/corpus" "$WORK/crashes"
cp "$FLYT_FIXTURES/instance-received.headers.json" "$WORK/corpus/fixture-headers.json"
cp "$FLYT_FIXTURES/instance-received.value.json" "$WORK/corpus/fixture-value.json"
{
	tr -d '\n' <"$FLYT_FIXTURES/instance-received.headers.json"
	printf '\377'
	tr -d '\n' <"$FLYT_FIXTURES/instance-received.value.json"
} >"$WORK/corpus/fixture-message"

rc=0
(cd "$WORK" && timeout $((SECONDS_TO_FUZZ + 60)) "$FUZZ_DIR/fuzz_wire" \
	-max_total_time="$SECONDS_TO_FUZZ" -max_len=8192 -timeout=10 \
	-dict="$FUZZ_DIR/wire.dict" -artifact_prefix=crashes/ -print_final_stats=1 \
	corpus "$FUZZ_DIR/seeds") >"$WORK/fuzz.log" 2>&1 || rc=$?

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/fuzz.log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/fuzz.log")
note "fuzzed ${SECONDS_TO_FUZZ}s: ${execs:-?} inputs, ${rate:-?}/s, corpus of $(find "$WORK/corpus" -type f | wc -l)"

crashes=$(find "$WORK/crashes" -type f | wc -l)
if [ "$rc" -eq 0 ] && [ "$crashes" -eq 0 ]; then
	pass "no crash in ${SECONDS_TO_FUZZ}s"
else
	details=()
	for f in "$WORK"/crashes/*; do
		[ -f "$f" ] && details+=("$(basename "$f"), base64: $(head -c 2000 "$f" | base64 -w0)")
	done
	fail "no crash in ${SECONDS_TO_FUZZ}s" "fuzz_wire exit $rc" "${details[@]}" \
		"$(grep -v '^#[0-9]' "$WORK/fuzz.log" | grep -v '^ *"' | tail -n 40)"
fi

if [ -n "$execs" ] && [ "$execs" -ge 10000 ]; then
	pass "at least 10000 inputs run"
else
	fail "at least 10000 inputs run" "ran ${execs:-none}"
fi

finish
