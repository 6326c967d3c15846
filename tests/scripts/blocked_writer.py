"""Child process of tests/test_files.py
(test_a_concurrent_writer_keeps_its_temporary_directory): writes "slow" to
PATH through `files.atomic_path`, prints "writing" once its temporary file
is written, and finishes the write only when file GO appears (or after
60 s).

Usage: python blocked_writer.py PATH GO
"""

import os
import sys
import time

from keras_densenet.core import files


def main(path, go):
    with files.atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("slow")
        print("writing", flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
