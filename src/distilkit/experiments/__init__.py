"""Experiments built from stages: `distil run`, the GLUE suite, the depth sweep, reports and model cards."""
