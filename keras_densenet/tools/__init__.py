"""Tools users call on models and checkpoints: checkpoint conversion
(`convert`) and the paper's analyses (`analysis`: Table 1 counts, feature
reuse).
"""
