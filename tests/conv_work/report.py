"""Adds up the convolution work that ``sitecustomize.py`` counted.

Prints the total GMACs per engine, the processes that wrote a count, and the
tests that did the most work.

Example:
    python tests/conv_work/report.py /tmp/work --top 15
"""

import argparse
import collections
import json
import pathlib


def load(directory):
    """Returns ({engine: MACs}, {test: MACs}, number of processes)."""
    engines, tests = collections.Counter(), collections.Counter()
    files = sorted(pathlib.Path(directory).glob("*.json"))
    for path in files:
        for row in json.loads(path.read_text())["rows"]:
            engines[row["engine"]] += row["macs"]
            if row["engine"] != "jax-uncounted-calls":
                tests[row["test"]] += row["macs"]
    return engines, tests, len(files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    engines, tests, processes = load(args.directory)
    print(f"{processes} processes counted")
    for engine, macs in sorted(engines.items()):
        unit = "calls" if engine.endswith("calls") else "GMAC"
        print(f"{engine:>22}: {macs if unit == 'calls' else macs / 1e9:,.1f} {unit}")
    total = sum(m for e, m in engines.items() if not e.endswith("calls"))
    print(f"{'total':>22}: {total / 1e9:,.1f} GMAC")
    for test, macs in tests.most_common(args.top):
        print(f"{macs / 1e9:10.1f} GMAC  {test}")


if __name__ == "__main__":
    main()
