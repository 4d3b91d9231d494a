"""`distil <command>`: the command-line interface (`distil = distilkit.cli:app`)."""

from . import train  # noqa: F401, I001 - each module registers its commands on `app`, in this order
from . import experiments  # noqa: F401
from . import deploy  # noqa: F401
from .common import app

__all__ = ["app"]
