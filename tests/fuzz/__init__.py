"""Fuzzing every loader of the package: mutations of valid files
(`mutations`), the loaders and their seed files (`targets`), the checks
every input must pass (`harness`), and the full campaign (`campaign`)."""
