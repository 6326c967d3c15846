"""A child process that only waits: SECONDS (default 0), then exits 0.
tests/test_files.py uses it for a process id that is alive, and, once it
has exited, for one that is not.

Usage: python sleep.py [SECONDS]
"""

import sys
import time

if __name__ == "__main__":
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0)
