"""`helium sweep`: a scaling ladder of normal training runs and a scaling law fitted to their val losses.

plan (what to train, sweep.json), run (the points as `helium train` subprocesses), fit (the power laws), results.
"""
