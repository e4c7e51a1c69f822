#!/usr/bin/env bash
# Stage 2: append one line per counted file to the report.
# meow_async sets $result_file and $report just above (see the job's script.sh and params.json).
set -euo pipefail
mkdir -p "$(dirname "$report")"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $(cat "$result_file")" >> "$report"
echo "summarised $(basename "$result_file") into $report"
