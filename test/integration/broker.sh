#!/usr/bin/env bash
# The embedded broker itself, checked with kcat (see broker/test_broker.sh).
exec "$(dirname "$0")/../../broker/test_broker.sh"
