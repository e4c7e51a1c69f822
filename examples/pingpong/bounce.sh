#!/usr/bin/env bash
# One bounce: read the round number from the received message, record it, and send the next
# round to the other runner until the last round. Set by meow_async above: $message (the
# received data, as a file), $peer (HOST:PORT of the other runner), $rounds, $me.
set -euo pipefail
n=$(cat "$message")
echo "$me got round $n"
if [ "$n" -lt "$rounds" ]; then
  echo $((n + 1)) | "$MEOW_PYTHON" -m meow_async send --ack "$peer" - > /dev/null
  echo "$me sent round $((n + 1)) to $peer"
fi
