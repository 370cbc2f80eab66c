"""``nextgpt serve``: load one model and serve it over HTTP (FastAPI + uvicorn, the ``serve`` extra).

Imports nothing heavy at module level (``nextgpt --help`` must not import torch or FastAPI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["serve"]


def serve(
    composition: str = typer.Option("toy", "--composition", "-c", help="Built-in name (toy: the trained toy world; tiny: random weights) or TOML path."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Trained weights (a nextgpt checkpoint folder)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    media_dir: Path = typer.Option(Path("outputs/serve-media"), "--media-dir", help="The only folder media are read from and written to."),
    workers: int = typer.Option(2, "--workers", help="Requests generating at once on the one model."),
    max_queue: int = typer.Option(8, "--max-queue", help="Requests waiting beyond --workers; more get 429."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds before a request is answered 504."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest media file (upload or inline), MiB."),
    max_media_seconds: float = typer.Option(60.0, "--max-media-seconds", help="Longest video / audio input."),
    max_media_pixels: int = typer.Option(4096 * 4096, "--max-media-pixels", help="Largest picture / frame (width x height)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Cap on a request's max_tokens."),
    preload: bool = typer.Option(True, "--preload/--lazy-decoders", help="Load every decoder before serving."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="NEXTGPT_API_KEY", show_envvar=True,
                                          help="Require `Authorization: Bearer <key>` on /v1/* (/health stays open)."),
    backend: str = typer.Option("inprocess", "--backend", help="inprocess (one process) or ray (Ray Serve deployments per stage)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this Ray cluster (e.g. auto) instead of starting one."),
    ray_replicas: list[str] = typer.Option([], "--ray-replicas", help="STAGE=N replicas (stage: language or an output modality); repeatable."),
    ray_cpus: list[str] = typer.Option([], "--ray-cpus", help="STAGE=CPUS per replica; repeatable."),
    ray_gpus: list[str] = typer.Option([], "--ray-gpus", help="STAGE=GPUS per replica; repeatable."),
) -> None:
    """Serve a composition over an OpenAI-compatible HTTP API (see docs/serving.md); the chat page is at /ui."""
    from ..cli import UsageProblem
    from ..composition import load_composition
    from .config import ServeConfig

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise UsageProblem(f"`nextgpt serve` needs the serve extra: pip install 'nextgpt-core[serve]' ({exc.name} is missing)") from exc
    if not 0 < port < 65536:
        raise UsageProblem(f"--port must be 1-65535, got {port}")
    if checkpoint is not None and not checkpoint.is_dir():
        from ..folders import not_a_folder

        why = not_a_folder(checkpoint)
        raise UsageProblem(f"checkpoint folder not found: {str(checkpoint)!r}" if why == "not found"
                           else f"--checkpoint {str(checkpoint)!r} {why}")
    config = ServeConfig(media_dir=media_dir, workers=workers, max_queue=max_queue, timeout_s=timeout,
                         max_upload_bytes=int(max_upload_mb * (1 << 20)), max_media_seconds=max_media_seconds,
                         max_media_pixels=max_media_pixels, max_new_tokens=max_new_tokens, api_key=api_key)
    if backend not in ("inprocess", "ray"):
        raise UsageProblem(f"--backend must be inprocess or ray, got {backend!r}")
    if backend != "ray" and (ray_address or ray_replicas or ray_cpus or ray_gpus):
        raise UsageProblem("--ray-* options need --backend ray")
    from .stages import parse_stage_settings

    stages = parse_stage_settings(ray_replicas, ray_cpus, ray_gpus)
    load_composition(composition)  # a malformed composition fails before anything heavy loads
    from .app import create_app

    if backend == "ray":
        try:
            from . import ray_backend
        except ImportError as exc:
            raise UsageProblem(f"--backend ray needs the ray extra: pip install 'nextgpt-core[ray]' ({exc.name} is missing)") from exc
        model = ray_backend.deploy(composition, checkpoint=str(checkpoint) if checkpoint else None, stages=stages,
                                   address=ray_address)
    else:
        from ..model import NextGPT

        model = NextGPT.from_composition(composition, checkpoint=checkpoint)
        for note in model.resolved.notes:
            typer.echo(f"note: {note}", err=True)
        if preload:
            model.load_decoders()
    app = create_app(model, config)
    key_note = ", API key required" if api_key is not None else ""
    typer.echo(f"serving {model.composition.name!r} on http://{host}:{port} (chat page: /ui, media: {config.media_dir}{key_note})", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if backend == "ray" and ray_address is None:  # the Ray started here goes with the server
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
