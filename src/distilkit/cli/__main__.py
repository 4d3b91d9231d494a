"""`python -m distilkit.cli ...` (what torchrun runs)."""

from . import app

app()
