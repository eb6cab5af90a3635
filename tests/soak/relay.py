#!/usr/bin/env python3
"""The soak's audit relay: copies a replica's stdout audit sink (read from stdin) into a file,
line by line, flushed as read, so `warden audit verify` and check.py read it like a file sink.

  relay.py OUT_FILE < fifo

The fault `audit_sink_slow` SIGSTOPs this process: it stops reading, the pipe fills and the
replica's audit writes block until SIGCONT. Exits at end of input (the replica exited).
Standard library only.
"""

import sys


def main() -> None:
    with open(sys.argv[1], "ab", buffering=0) as out:
        for line in sys.stdin.buffer:
            out.write(line)


if __name__ == "__main__":
    main()
