"""The one exception type for bad input data."""

from ..errors import UserError


class DataError(UserError):
    """Bad input data. The message names the file, the line (1-based) and/or
    the field, and says what was expected."""
