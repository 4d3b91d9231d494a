"""The one base of every error a user can cause (bad option, file, folder or model); the CLI turns any of
them into exit status 2 and a one-line message. Each module raises its own subclass, named for what is wrong."""


class UserError(ValueError):
    """Bad input from the user: the message says what was given, where, and what was expected."""


class ConfigError(UserError):
    """An option value outside its allowed range, naming the option."""
