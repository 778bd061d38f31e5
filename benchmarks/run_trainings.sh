#!/usr/bin/env bash
# The real training runs behind docs/results.md, one after another; each resumes if killed.
set -u
cd "$(dirname "$0")/.."
for cfg in "$@"; do
  echo "=== $cfg $(date -u +%H:%M:%S)"
  .venv/bin/python -m kseg train --config "$cfg" || echo "FAILED $cfg"
done
echo "=== done $(date -u +%H:%M:%S)"
