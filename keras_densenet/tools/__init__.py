"""Tools users call on models and checkpoints: checkpoint conversion
(`convert`) and the paper's analyses: Table 1 (`table`), the counts behind
it (`counts`: weighted depth, MACs, activation memory), the dense blocks'
connectivity (`connectivity`) and feature reuse (`reuse`).
"""
