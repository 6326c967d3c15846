"""Child process of tests/test_hdf5.py: probes the HDF5 file ``argv[1]``
under a finite hard limit on CPU time (as a batch scheduler sets one),
lower than the probe's own limit. Prints ``ok`` or the probe's error.
"""

import resource
import sys

from keras_densenet.core.hdf5 import probe


def main(path: str) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    hard = int(used.ru_utime + used.ru_stime) + 3
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    try:
        probe(path)
    except ValueError as error:
        print(error)
    else:
        print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
