"""nextgpt's errors. Every one carries a single line that names the problem; the CLI prints it and exits 2."""

from __future__ import annotations

__all__ = [
    "NextGPTError",
    "ConfigError",
    "CompositionError",
    "CheckpointError",
    "FolderMismatchError",
    "ConditioningError",
    "MediaError",
    "ConversationError",
    "ContextLengthError",
    "WeightsNotFoundError",
    "DatasetError",
    "GalleryIndexError",
]


class NextGPTError(Exception):
    """Base of every error nextgpt raises on bad input (never on a bug of its own)."""


class ConfigError(NextGPTError, ValueError):
    """Invalid options for a component, or an invalid setting."""


class CompositionError(ConfigError):
    """A composition file that does not parse, has unknown keys, or whose parts do not fit together."""


class CheckpointError(NextGPTError):
    """A checkpoint or component directory that is missing, corrupt, or does not fit the model."""


class FolderMismatchError(CheckpointError, ConfigError):
    """A local weights folder whose models do not fit the component's config (a diffusers pipeline whose UNet takes
    another conditioning width, say), whether found from the folder's config files or once it loaded. Both a
    :class:`CheckpointError` (the folder does not fit) and a :class:`ConfigError` (nor do the options)."""


class ConditioningError(NextGPTError, ValueError):
    """Conditioning tensors that do not match what a decoder declares."""


class MediaError(NextGPTError, ValueError):
    """A media file that is missing, unreadable, corrupt or too large."""


class ConversationError(NextGPTError, ValueError):
    """A malformed conversation (unknown modality, empty turn, bad role)."""


class ContextLengthError(ConversationError):
    """A conversation whose last turn alone does not fit the context budget (the LLM's context minus the reply's
    ``max_new_tokens``)."""


class WeightsNotFoundError(NextGPTError, FileNotFoundError):
    """Local weights a composition points at are not there (nextgpt never downloads them)."""


class DatasetError(NextGPTError, ValueError):
    """A dataset file or row that cannot be read (the message names the file and the row)."""

    def __init__(self, message: str, problem: object = None) -> None:
        super().__init__(message)
        self.problem = problem


class GalleryIndexError(NextGPTError):
    """A retrieval gallery index that is missing, malformed, or was built with another encoder than the one asked."""
