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


class LLMError(FullchainError):
    """A model endpoint or engine that failed or answered something unusable: the message names
    the URL (or model folder), the HTTP status and the server's own message. `status` is the
    HTTP status, or None when there was no HTTP answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
