# flyt_instance — PGXS build.  `make run` and `make test` are the two entry
# points; see README.md.

EXTENSION = flyt_instance
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = flyt_instance
OBJS = \
	src/flyt_instance.o \
	src/guc.o \
	src/log_privacy.o \
	src/duration.o \
	src/wire.o \
	src/plans.o \
	src/retry.o \
	src/store.o \
	src/outbox.o \
	src/history.o \
	src/cleanup.o \
	src/shared.o \
	src/status.o \
	src/kafka.o \
	src/admin.o \
	src/breaker.o \
	src/probe.o \
	src/outbox_scan.o \
	src/pump.o \
	src/consumer.o \
	src/flowreq.o \
	src/worker.o \
	src/api.o \
	src/import.o \
	src/deadletter.o

DATA = $(wildcard sql/$(EXTENSION)--*.sql)

SHLIB_LINK = -lrdkafka -ljansson
PG_CPPFLAGS = -I$(srcdir)/src
# -Wextra on top of PGXS's -Wall.  Unused parameters are the norm in
# PostgreSQL's callback signatures and in its own inline functions.
PG_CFLAGS = -Wextra -Wno-unused-parameter

TESTS = $(sort $(wildcard test/sql/*.sql))
REGRESS = $(patsubst test/sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --inputdir=test --load-extension=$(EXTENSION)
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --load-extension=$(EXTENSION)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
include broker/Makefile.inc

.PHONY: test run deps

deps:
	@script/deps.sh

# Builds, installs, then runs every suite against throw-away clusters.
test: deps all broker
	@script/install.sh
	@test/run.sh

# A throw-away cluster with the extension and a sample instance.
run: deps all broker
	@script/install.sh
	@script/run.sh

# PGXS tracks no header dependencies: rebuild every object when a header changes.
$(OBJS): $(wildcard src/*.h)
.PHONY: bench
bench: deps all broker
	@script/install.sh && bench/run.sh

# The retention cleanup's next design, measured on plain tables before it is
# built (bench/cleanup_design.sh; no extension needed).
.PHONY: bench-design
bench-design: deps
	@bench/cleanup_design.sh

# The suites against an AddressSanitizer build (script/asan.sh); choose
# suites with FLYT_ASAN_SUITES="regress isolation pgtap integration".
.PHONY: asan
asan: deps all broker
	@script/asan.sh

# The libFuzzer target for the wire parsing (test/fuzz/, built with clang):
# fuzzes for FUZZ_SECONDS (default 300), growing test/fuzz/corpus; crashes
# land in test/fuzz/crashes.  `make test` runs it for 20 s
# (test/integration/fuzz_wire.sh).
.PHONY: fuzz
FUZZ_SECONDS ?= 300
fuzz:
	@$(MAKE) --no-print-directory -C test/fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS)
