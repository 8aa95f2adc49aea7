"""Output analysis and validation: warm-up cut and intervals (``output_analysis``), queueing
formulas (``analytic``) and the engine-against-theory cases (``validate``)."""
