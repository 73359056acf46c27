"""Weights for tests, demos and benchmarks; never for restoring photographs.

* `oldphoto.testing.seeded`: deterministic stand-in weights in the official checkpoint layout, the
  weights the official goldens in ``tests/data/official/`` were computed with.
* `oldphoto.testing.random_weights`: randomly initialised oldphoto weights files for every role.
"""
