"""The stages of a Ray Serve deployment and their resources (no Ray needed to parse them): ``language`` (encoders,
projectors, LLM) and one stage per output modality (its decoder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

__all__ = ["LANGUAGE", "StageSpec", "parse_stage_settings"]

#: the stage holding encoders, projectors and the LLM
LANGUAGE = "language"


@dataclass(frozen=True)
class StageSpec:
    """Resources of one stage: ``replicas`` (Serve replicas), ``num_cpus`` and ``num_gpus`` per replica (Ray's
    logical resources; the default 0.5 CPU lets the language stage and three decoders share 2 CPUs)."""

    replicas: int = 1
    num_cpus: float = 0.5
    num_gpus: float = 0.0

    def options(self, name: str, env: Mapping[str, str]) -> dict[str, Any]:
        """The ``Deployment.options`` of a stage called ``name``."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if env:
            actor["runtime_env"] = {"env_vars": dict(env)}
        return {"name": name, "num_replicas": self.replicas, "ray_actor_options": actor, "max_ongoing_requests": 16}


def parse_stage_settings(replicas: Sequence[str] = (), cpus: Sequence[str] = (), gpus: Sequence[str] = ()) -> dict[str, StageSpec]:
    """``["image=2", "language=1"]``-style settings per stage (``language`` or an output modality) ->
    ``{stage: StageSpec}``. Raises :class:`ConfigError` for a malformed item."""
    values: dict[str, dict[str, float]] = {}
    for field_name, items, kind in (("replicas", replicas, int), ("num_cpus", cpus, float), ("num_gpus", gpus, float)):
        for item in items:
            stage, sep, text = item.partition("=")
            try:
                if not sep or not stage.strip():
                    raise ValueError
                value = kind(text)
            except ValueError:
                raise ConfigError(f"ray settings: expected STAGE=NUMBER (e.g. image=2), got {item!r}") from None
            if value < (1 if field_name == "replicas" else 0):
                raise ConfigError(f"ray settings: {field_name} of {stage!r} must be at least {1 if field_name == 'replicas' else 0}, got {value}")
            values.setdefault(stage.strip(), {})[field_name] = value
    return {stage: StageSpec(**{k: (int(v) if k == "replicas" else v) for k, v in spec.items()}) for stage, spec in values.items()}
