"""The one exception type for bad input: its message names the file and what is wrong."""


class ChangeAgentError(Exception):
    """Raised for user-facing problems (bad files, bad configs); the CLI prints the message, exit 2."""
