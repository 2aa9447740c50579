"""Errors meant for the user: each message names the file or value and the problem."""


class CllmError(Exception):
    """Base class. The message is complete and can be shown as is."""


class CorpusError(CllmError):
    """A training text that cannot be used (missing, empty, binary, not UTF-8)."""


class TokenizerError(CllmError):
    """Text the tokenizer cannot encode, or a tokenizer description that is broken."""


class ModelFileError(CllmError):
    """A .cllm file that is broken, truncated, foreign or inconsistent."""


class Cancelled(CllmError):
    """Work the user cancelled (a corpus's preparation); nothing of it was kept."""


class ConfigError(CllmError):
    """Hyper-parameters that make no sense together."""


class HuggingFaceFolderError(CllmError):
    """A Hugging Face model folder that cannot be imported, or a folder an export cannot
    be written to."""
