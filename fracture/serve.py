"""Serve a checkpoint over HTTP with a web page: `python -m fracture.serve ckpt_path=... [serve.port=8000]`.

Loads the model once, then runs uvicorn until Ctrl-C. The API and the page are in `fracture.serving`.
"""

from __future__ import annotations

import ipaddress
import socket

import hydra
from omegaconf import DictConfig

from fracture.cli import CONFIG_DIR, backend_options, log, prepare_backend
from fracture.errors import ConfigError, user_errors


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to them (localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except socket.gaierror as error:
            raise ConfigError(f"serve.host={host!r} does not resolve ({error}).") from error
        return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def check_bind(host: str, allow_remote: bool, token: str | None) -> None:
    """Loopback by default: another address must be asked for twice, and without a token it is logged loudly."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(
            f"serve.host={host} would expose the service beyond this machine; "
            "add serve.allow_remote=true to mean it (and set serve.token=...)."
        )
    if token is None:
        log.warning("serving on %s without a token: anyone who can reach this address can use the model", host)


def serve(cfg: DictConfig) -> None:
    settings = cfg.serve
    check_bind(settings.host, settings.allow_remote, settings.token)
    if cfg.engine not in ("local", "ray"):
        raise ConfigError(f"engine must be local or ray, got {cfg.engine!r}.")
    if cfg.engine == "ray" and settings.precision != "float32":
        raise ConfigError("serve.precision=bfloat16 runs with engine=local only; drop one of them.")
    if settings.max_batch_size < 1 or settings.batch_wait_ms < 0 or settings.max_queued < 1:
        raise ConfigError("serve.max_batch_size and serve.max_queued must be at least 1, serve.batch_wait_ms >= 0.")
    try:
        from fracture.serving import ServeSettings, create_app, run_server
    except ModuleNotFoundError as error:
        raise ConfigError(f"the service needs the serve extra ({error}): pip install 'fracture[serve]'.") from error
    from fracture.inference.predictor import load_predictor
    from fracture.models.checkpoint import checkpoint_id
    from fracture.models.engines import choose_engine

    choose_engine(str(settings.runtime), setting="serve.runtime", precision=str(settings.precision))

    prepare_backend(cfg)
    limits = ServeSettings(
        max_upload_bytes=int(settings.max_upload_mb * 1024 * 1024),
        max_pixels=int(settings.max_pixels),
        token=settings.token,
        min_side=int(settings.min_side),
        max_aspect=float(settings.max_aspect),
    )
    if cfg.engine == "ray":
        serve_replicas(cfg, limits)
        return
    from fracture.serving.batching import BatchingWorker
    from fracture.serving.worker import ModelWorker

    engine_options = dict(runtime=str(settings.runtime), precision=str(settings.precision))
    predictor = load_predictor(cfg.ckpt_path, cfg.gradcam_layer, limits.max_pixels, **engine_options)
    predictor.warm_up()  # the first request should not pay for building the engine and compiling
    worker = ModelWorker(predictor)
    if int(settings.max_batch_size) > 1:
        batching = (int(settings.max_batch_size), float(settings.batch_wait_ms), int(settings.max_queued))
        worker = BatchingWorker(worker, *batching)
    app = create_app(predictor, checkpoint_id(cfg.ckpt_path), limits, worker=worker)
    engine = predictor.engine.label if predictor.engine else "onnxruntime (an exported model)"
    log.info(
        "serving %s on http://%s:%d with the %s engine (not a medical device)",
        cfg.ckpt_path,
        settings.host,
        settings.port,
        engine,
    )
    run_server(app, settings.host, int(settings.port), settings.log_level)


def serve_replicas(cfg: DictConfig, limits) -> None:
    """`engine=ray`: the same app on `serve.replicas` Ray Serve replicas (`fracture.serving.ray_serve`)."""
    from fracture.ray_cluster import RaySettings, require_ray

    require_ray()
    from fracture.serving.ray_serve import ReplicaSpec, serve_on_ray

    settings = cfg.serve
    spec = ReplicaSpec(
        str(cfg.ckpt_path),
        limits,
        cfg.gradcam_layer,
        max_batch_size=int(settings.max_batch_size),
        batch_wait_ms=float(settings.batch_wait_ms),
        runtime=str(settings.runtime),
        backend=backend_options(cfg),
    )
    ray_settings = RaySettings(cfg.ray.address, int(settings.replicas), cfg.ray.cpus_per_replica)
    log.info(
        "serving %s on http://%s:%d with %d Ray Serve replica(s) (not a medical device)",
        cfg.ckpt_path,
        settings.host,
        settings.port,
        settings.replicas,
    )
    serve_on_ray(spec, ray_settings, settings.host, int(settings.port), int(settings.max_queued))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def main(cfg: DictConfig) -> None:
    with user_errors():
        serve(cfg)


if __name__ == "__main__":
    main()
