"""mtl-tune's machine-learning core: problems, models, loss weighting, training and studies.

Nothing in this package speaks HTTP.
"""
