"""User-facing errors: the CLI prints them as one line and exits non-zero, with no traceback."""


class FullchainError(Exception):
    """A problem the user can fix (bad file, key or value); the message names it and the fix."""


class ConfigError(FullchainError):
    """An unknown config key or a value of the wrong type or range."""


class CheckpointError(FullchainError):
    """A model folder that is missing, truncated or inconsistent."""


class TokenizerError(FullchainError):
    """A tokenizer folder that cannot be loaded or does not match its model."""


class DataError(FullchainError):
    """A data file (documents, token shards, chat JSONL) that is malformed or incompatible."""
