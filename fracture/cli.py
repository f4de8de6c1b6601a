"""What every command-line entry point shares: where the configs are, building objects from them, and
turning user errors into one line on stderr."""

from __future__ import annotations

import logging
import os

# The entry points quiet TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes), which hides the
# messages that matter; set before anything below imports TensorFlow. The library itself leaves it alone.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import warnings  # noqa: E402
from importlib.resources import files  # noqa: E402

from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.errors import InstantiationException  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from fracture.cache_entry import size_limit  # noqa: E402
from fracture.compilation_cache import enable_compilation_cache  # noqa: E402
from fracture.errors import ConfigError, FractureError, user_errors  # noqa: E402
from fracture.io import check_writable, nearest_existing  # noqa: E402
from fracture.jax_depthwise import enable_fast_depthwise_conv  # noqa: E402
from fracture.run_folder import RunFolder  # noqa: E402
from fracture.training.metric_names import metric_mode  # noqa: E402

# The top-level conf/ of a checkout, installed as the package fracture.conf (see pyproject.toml), so that
# editable and regular installs find the same files.
CONFIG_DIR = str(files("fracture.conf"))
log = logging.getLogger("fracture")
# conf/hydra/launcher/submitit_local.yaml and ray.yaml share their names with the plugins' schemas, which Hydra
# then checks them against and says so at every run ("automatic schema matching"). The files spell out their
# _target_ and keys, so they need no schema and the check changes nothing: the notice is noise here.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/(submitit_local|ray)' is validated against ConfigStore")
# The ONNX converters that export, the inference engines and the extraction run (tf2onnx on TensorFlow, jax2onnx on
# JAX) log every optimisation pass at INFO, and Keras' tf2onnx shim warns that np.object will change: none of it
# is the user's to act on. Their warnings and errors still show.
for _converter_log in ("tf2onnx", "tensorflow", "absl", "jax2onnx", "onnx_ir", "jax"):
    logging.getLogger(_converter_log).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r"In the future `np\.object` will be defined", category=FutureWarning)


def run_folder(resume, fresh: str, runs_dir: str) -> str:
    """`hydra.run.dir`: the new folder `fresh`, or for `resume=` the run it continues, so that Hydra puts the
    resumed job's log in that run's own folder and makes no stray new one. A resume with nothing to continue
    gets `fresh`, where the job then says so."""
    resumed = RunFolder.to_resume(resume, runs_dir)
    return str(resumed.path if resumed else fresh)


def hydra_subdir(resume, now: str) -> str:
    """`hydra.output_subdir`: `.hydra`, or for a resume `.hydra/resumed-<time>`, so that the run's own
    `.hydra/config.yaml` (what the resume is checked against) stays as the run began."""
    return f".hydra/resumed-{now}" if resume else ".hydra"


def mlflow_sweep_run() -> str | None:
    """`logger.mlflow.parent_run_id`: in a sweep's job, the sweep's parent MLflow run (`fracture.tracking`)."""
    from fracture.tracking.mlflow_sweep import sweep_parent_run

    return sweep_parent_run()


def mlflow_job_name() -> str:
    """`logger.mlflow.run_name`: in a sweep's job, its number and the values it tries; else ""."""
    from fracture.tracking.mlflow_sweep import sweep_job_name

    return sweep_job_name()


OPTUNA_DIRECTIONS = {"min": "minimize", "max": "maximize"}

# Used by conf/hydra/default.yaml; registered when an entry point imports this module, before Hydra starts.
OmegaConf.register_new_resolver("fracture.run_folder", run_folder, replace=True)
OmegaConf.register_new_resolver("fracture.hydra_subdir", hydra_subdir, replace=True)
OmegaConf.register_new_resolver("fracture.mlflow_sweep_run", mlflow_sweep_run, replace=True)
OmegaConf.register_new_resolver("fracture.mlflow_job_name", mlflow_job_name, replace=True)
# Used by conf/callbacks and conf/hparams_search: the direction of `optimized_metric`, decided by `metric_mode`.
OmegaConf.register_new_resolver("fracture.metric_mode", metric_mode, replace=True)
OmegaConf.register_new_resolver(
    "fracture.optuna_direction", lambda name, mode: OPTUNA_DIRECTIONS[metric_mode(name, mode)], replace=True
)


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate` with plain Python containers, reporting config mistakes as `ConfigError`."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, FractureError):
            raise cause from None
        raise ConfigError(f"bad config for {node.get('_target_', 'object')}: {cause or error}") from error


def build_all(group: DictConfig | None) -> list:
    """Instantiate every entry of a group such as `callbacks` (a mapping of name -> object config)."""
    return [build(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def prepare_backend(cfg: DictConfig) -> None:
    """Backend set-up shared by the entry points, done before any model is built; a bad
    `$FRACTURE_CACHE_MAX_GB` is refused here rather than after the first entry is computed."""
    size_limit()
    enable_compilation_cache(cfg.get("compilation_cache"))
    enable_fast_depthwise_conv(bool(cfg.get("fast_depthwise_conv", False)))


def backend_options(cfg: DictConfig) -> dict:
    """What `prepare_backend` reads, as plain values, for processes that set themselves up (Ray's actors)."""
    return {"compilation_cache": cfg.get("compilation_cache"), "fast_depthwise_conv": cfg.get("fast_depthwise_conv")}


class OutputFolderCheck(Callback):
    """Refuse, as one line, a run or sweep folder that cannot be created, before Hydra tries to create it
    (Hydra's own failure is a traceback). Registered in conf/hydra/default.yaml."""

    def _check(self, folder: str) -> None:
        with user_errors():
            check_writable(nearest_existing(folder))

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        # The folder's default interpolates ${hydra:runtime.cwd}, which resolves only once HydraConfig is set
        # (Hydra sets it just after this callback; without this, every such run warned).
        HydraConfig.instance().set_config(config)
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)
        self._check(config.hydra.sweep.dir)
