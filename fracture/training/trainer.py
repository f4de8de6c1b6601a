"""`Trainer`: fit, validate, test and predict a `FractureClassifier` on a `FractureDataModule`.

Modelled on Lightning's Trainer: the loop's settings (epochs, batch limits, precision, XLA) live here, the
network lives in the classifier and the data in the data module.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from fracture.console import console
from fracture.data.pipeline import predict_full_batches
from fracture.errors import ConfigError
from fracture.io import DEFAULT_CACHE, check_writable
from fracture.models.classifier import FractureClassifier
from fracture.models.schema import CheckpointMetadata
from fracture.training.callbacks import ModelCheckpoint
from fracture.training.devices import DataParallel, resolve_devices
from fracture.training.distributed import any_process, check_backend, find_process_group, join, needs_starting
from fracture.training.execution import PRECISIONS, default_jit_compile, enable_determinism
from fracture.training.extraction import backbone_runner
from fracture.training.feature_cache import FeatureCache
from fracture.training.guards import DivergenceGuard, InterruptGuard, checkpoint_bytes, disk_full
from fracture.training.metric_names import slash_logs
from fracture.training.profiler import PhaseProfiler
from fracture.training.progress import RichProgress
from fracture.training.resume import StageBackup, epoch_stream, epochs_to_skip
from fracture.training.stages import DEFAULT_STAGE, HeadStage
from fracture.training.streams import BatchLimits, FitData, StreamChooser, ends_of_passes_expected, limited

log = logging.getLogger(__name__)


def check_image_size(classifier: FractureClassifier, datamodule) -> None:
    """Fail with one line where the model's input side is not the data's: otherwise the backend fails deep
    inside the first batch. The model configs follow the data's (`model.image_size: ${data.image_size}`), so
    overriding `model.image_size` alone is the usual way to get here."""
    if classifier.image_size != datamodule.image_size:
        raise ConfigError(
            f"model.image_size={classifier.image_size} but data.image_size={datamodule.image_size}: the model must "
            "take the images the data module makes; set data.image_size (the model configs follow it)."
        )


class Trainer:
    """Runs training and evaluation loops.

    Args:
        epochs: epochs to train in `fit`.
        limit_train_batches: use at most this many training batches per epoch (None: all).
        limit_val_batches: and at most this many validation batches.
        fast_dev_run: one epoch of one training and one validation batch, to check that everything runs. On
            TensorFlow the steps run eagerly: tracing and optimising EfficientNetB3's graphs for one batch took
            three times as long as running it eagerly (59 s against 18 s on 2 cores).
        overfit_batches: train and validate on the same first N training batches, without augmentation;
            the loss must fall, or the model or data is broken (validation trails: it runs on BatchNormalization's
            moving statistics, which lag after few steps; `fracture.recipe.lagging_statistics`).
        jit_compile: True, False or "auto" (see `fracture.training.execution.default_jit_compile`).
        precision: `float32`, `mixed_bfloat16` or `mixed_float16` (loss scaling is added by Keras).
        callbacks: Keras callbacks, e.g. from `fracture.training.callbacks`.
        progress: show rich progress bars.
        profile: time the loop's phases and print a table after each `fit` (see `PhaseProfiler`).
        deterministic: make repeated runs with the same seed give the same metrics on the same backend
            (deterministic TensorFlow ops; a little slower). Asked for explicitly, it stays on for the rest of
            the process: TensorFlow offers no way to switch op determinism off again.
        devices: how many devices to train on, or "all": data parallel over GPUs (or simulated CPU devices);
            see `fracture.training.devices`.
        backup_dir: back up the training state (weights, optimizer, epoch) after every epoch under
            `<backup_dir>/<stage>/`. A later `fit` with the same folder resumes from the last finished epoch;
            see `fit`.
        feature_cache: "auto", True or False. With a frozen backbone, compute its features once (per image and
            view) and train the head on them; "auto" does so unless a run samples a few batches
            (`limit_train_batches`, `fast_dev_run`, `overfit_batches`) or uses several devices. A stage whose
            backbone trains (fine-tuning) runs uncached. See `fracture.training.feature_cache`.
        feature_cache_views: views cached per training image: view 0 un-augmented, the others augmented (1
            when augmentation is off).
        feature_cache_dir: folder of reusable cache entries (memory-mapped); "default": `features/` under the
            cache root (`fracture.io.cache_dir`); None keeps them in memory.
        feature_cache_engine: "local" runs the backbone for the cache here; "ray" on Ray actors
            (`fracture.training.ray_extraction`), with `feature_cache_ray`: `address`, `actors`,
            `cpus_per_actor` (`fracture.ray_cluster.RaySettings`) and the actors' `backend` set-up.
        extraction_engine: the inference engine of the cache's backbone passes: "auto", "keras", "onnxruntime"
            or "openvino", checked against Keras when built (`fracture.models.engines`).
        extraction_precision: "float32", or "bfloat16" on OpenVINO where the processor has bfloat16
            instructions: about twice as fast, with features about 1% off; judge it on your validation set.
        num_processes: data-parallel training processes (JAX only; `fracture.training.distributed`). Each trains
            on its shard of the training files (`FractureDataModule.shard_training`) and drives its own devices;
            the global batch stays `data.batch_size`. Only process 0 writes checkpoints and backups.
        process_id: this process's number (0..num_processes-1); None reads it from submitit's or SLURM's job
            environment.
        coordinator: `host:port` where process 0 waits for the others (None: derived from the job's).
        peer_timeout_s: a process silent for this long makes the others stop with an error.
    """

    def __init__(
        self,
        epochs: int = 10,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        fast_dev_run: bool = False,
        overfit_batches: int = 0,
        jit_compile: bool | str = "auto",
        precision: str = "float32",
        callbacks: list | tuple = (),
        progress: bool = True,
        profile: bool = False,
        deterministic: bool = False,
        backup_dir: str | Path | None = None,
        devices: int | str = 1,
        feature_cache: bool | str = "auto",
        feature_cache_views: int = 2,
        feature_cache_dir: str | Path | None = DEFAULT_CACHE,
        feature_cache_engine: str = "local",
        feature_cache_ray: dict | None = None,
        extraction_engine: str = "auto",
        extraction_precision: str = "float32",
        num_processes: int = 1,
        process_id: int | None = None,
        coordinator: str | None = None,
        peer_timeout_s: int = 60,
    ):
        if precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {PRECISIONS}, got {precision!r}.")
        if jit_compile not in (True, False, "auto"):
            raise ConfigError(f"trainer.jit_compile must be true, false or auto, got {jit_compile!r}.")
        if epochs < 1:
            raise ConfigError(f"trainer.epochs must be at least 1, got {epochs}.")
        if feature_cache not in (True, False, "auto"):
            raise ConfigError(f"trainer.feature_cache must be true, false or auto, got {feature_cache!r}.")
        if feature_cache_views < 1:
            raise ConfigError(f"trainer.feature_cache_views must be at least 1, got {feature_cache_views}.")
        if fast_dev_run:
            epochs, limit_train_batches, limit_val_batches = 1, 1, 1
        self.epochs = epochs
        self.limit_train_batches = limit_train_batches
        self.limit_val_batches = limit_val_batches
        self.fast_dev_run = fast_dev_run
        self.overfit_batches = overfit_batches
        self.run_eagerly = fast_dev_run and keras.backend.backend() == "tensorflow"  # JAX is slower op by op
        self.jit_compile = (default_jit_compile() if jit_compile == "auto" else jit_compile) and not self.run_eagerly
        self.precision = precision
        self.callbacks = list(callbacks)
        self.progress = progress
        self.profile = profile
        self.deterministic = deterministic
        self.backup_dir = Path(backup_dir) if backup_dir else None
        self.processes = find_process_group(num_processes, process_id, coordinator)
        if needs_starting(self.processes):
            raise ConfigError(
                f"trainer.num_processes={num_processes} needs each process's trainer.process_id and "
                "trainer.coordinator, or a launcher that sets them (python -m fracture.train starts them itself)."
            )
        check_backend(self.processes, keras.backend.backend())
        join(self.processes, peer_timeout_s)
        if self.processes.multi and devices not in (1, "all"):
            raise ConfigError("with trainer.num_processes, each process uses all its devices; drop trainer.devices.")
        self.parallel = DataParallel(
            keras.distribution.list_devices() if self.processes.multi else resolve_devices(devices),
            across_processes=self.processes.multi,
        )
        if deterministic:
            enable_determinism()
        self.feature_cache = feature_cache
        self.features = FeatureCache(
            feature_cache_dir,
            feature_cache_views,
            backbone_runner(feature_cache_engine, feature_cache_ray, extraction_engine, extraction_precision),
        )
        self.limits = BatchLimits(limit_train_batches, limit_val_batches, overfit_batches)
        self.streams = StreamChooser(feature_cache, self.features, self.limits, fast_dev_run)
        self.current_epoch = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ helpers
    @property
    def used_feature_cache(self) -> bool:
        """Whether a stage of this trainer trained on cached features."""
        return self.streams.used_cache

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return next((cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)), None)

    def build(self, classifier: FractureClassifier) -> keras.Model:
        """Build the classifier's model under this trainer's precision policy."""
        if classifier.model is None:
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.precision)
            try:
                with self.parallel.scope():
                    classifier.configure_model()
            finally:
                keras.config.set_dtype_policy(previous)
        return classifier.model

    def checkpoint_metadata(self, classifier: FractureClassifier, datamodule) -> CheckpointMetadata:
        """What a checkpoint needs to be used without its config: classes, input size, threshold, origin."""
        positive, negative = datamodule.class_names
        return CheckpointMetadata(
            positive_class=positive,
            negative_class=negative,
            image_size=classifier.image_size,
            hparams=classifier.hparams(),
            backend=keras.backend.backend(),
            keras_version=keras.__version__,
            precision=self.precision,
        )

    # ------------------------------------------------------------------ loops
    def _callbacks(self, backup: StageBackup | None, progress, interrupt) -> list[keras.callbacks.Callback]:
        """The order matters: the divergence guard first (it must stop before anything saves NaN weights),
        then the user's callbacks (checkpoints, loggers), then the backups: an epoch counts as finished for a
        resume only once every record of it is written (a kill in between trains it again, and the loggers
        replace its row); then the interrupt guard and the progress bars; a profiler wraps them all."""
        backups = backup.callbacks(write=self.processes.is_chief) if backup else []
        callbacks = [DivergenceGuard(), *self.callbacks, *backups, interrupt]
        callbacks += [progress] if progress else []
        return callbacks

    @staticmethod
    def _build_metrics_apart_from_the_stream(model, batch_size: int) -> None:
        """Keras' JAX trainer builds unbuilt metrics by peeking at a batch through an extra iterator over the
        training stream, which would advance the augmentation RNG (and a resume's skip) once more than on
        TensorFlow. Building them on a batch of zeros keeps the stream for training alone."""
        shape = (batch_size, *model.input_shape[1:])
        model.evaluate(np.zeros(shape, "float32"), np.zeros((shape[0], 1), "float32"), verbose=0)

    def fit(
        self,
        classifier: FractureClassifier,
        datamodule,
        epochs: int | None = None,
        learning_rate: float | None = None,
        stage: str | HeadStage = "",
    ) -> dict[str, float]:
        """Train one stage: `epochs` more epochs (default `self.epochs`); returns the last epoch's metrics.

        Calling `fit` again continues the epoch count, which is how a fine-tuning stage follows a
        frozen-base stage. `learning_rate` overrides the classifier's optimizer rate for this stage. `stage` is
        a name (the model trains as it is) or a `fracture.training.stages` stage, which sets its own epochs
        and learning rate; the stage says whether its backbone trains, and so whether cached features serve.
        """
        if not isinstance(stage, HeadStage):
            stage = HeadStage(stage or DEFAULT_STAGE, epochs, learning_rate)
        elif epochs is not None or learning_rate is not None:
            raise ConfigError(f"stage {stage.name!r} sets its own epochs and learning rate; pass them to the stage.")
        check_image_size(classifier, datamodule)
        datamodule.setup()  # fail on bad data before the slow model build
        if self.processes.multi:
            datamodule.shard_training(self.processes.process_id, self.processes.num_processes)
        self.build(classifier)
        with self.parallel.scope():
            data = self.streams.fit_data(
                classifier, datamodule, stage, self.parallel.devices_per_process, self.compile_options
            )
        end_epoch = self.current_epoch + (1 if self.fast_dev_run else stage.epochs or self.epochs)
        # A cached stage backs up the head model's state, which an uncached one could not restore.
        backup = None
        if self.backup_dir is not None:
            backup = StageBackup(self.backup_dir, f"{stage.name}_cached" if data.cached else stage.name)
        skip = epochs_to_skip(backup.finished_epochs() if backup else None, self.current_epoch, end_epoch)
        if skip:
            log.info("resuming stage %r after %d finished epoch(s) from %s", backup.stage, skip, backup.folder)
        if self.checkpoint_callback is not None:  # the whole model is saved, whatever the stage fits
            self.checkpoint_callback.metadata = self.checkpoint_metadata(classifier, datamodule)
            self.checkpoint_callback.model_to_save = classifier.model
        saved_bytes = checkpoint_bytes(classifier.model)  # what a checkpoint or a backup writes
        for folder in filter(None, (self.backup_dir, getattr(self.checkpoint_callback, "dirpath", None))):
            if self.processes.is_chief:
                check_writable(folder, saved_bytes)  # fail now, not at the first save an epoch later
        if keras.backend.backend() == "jax":
            self._build_metrics_apart_from_the_stream(data.model, datamodule.training_batch_size)
        train = epoch_stream(data.train, data.steps, skip)
        history = self._run(data, train, end_epoch, backup, stage.name, saved_bytes)
        for index in range(len(history.epoch)):
            self.history.append(slash_logs({key: values[index] for key, values in history.history.items()}))
        # history.epoch holds absolute epoch numbers; it is empty when a resumed stage had already finished.
        self.current_epoch = history.epoch[-1] + 1 if history.epoch else end_epoch
        return dict(self.history[-1]) if self.history else {}

    def _run(self, data: FitData, train, end_epoch: int, backup: StageBackup | None, stage: str, saved_bytes: int):
        """Keras' loop over `end_epoch - current_epoch` epochs with the guards, backups and progress; a stop
        restores the terminal, and a full disk becomes `DiskFull` with the backup left whole."""
        label = "" if stage == DEFAULT_STAGE else stage  # a run's only stage needs no name on every line
        progress = RichProgress(data.steps, end_epoch, label) if self.progress else None
        interrupt = InterruptGuard((lambda flag: any_process(flag, self.processes)) if self.processes.multi else None)
        callbacks = self._callbacks(backup, progress, interrupt)
        profiler = PhaseProfiler() if self.profile else None
        if profiler:
            callbacks = [profiler.first, *callbacks, profiler.last]
        with interrupt, self.parallel.scope(), ends_of_passes_expected():
            try:
                history = data.model.fit(
                    train,
                    validation_data=data.val,
                    epochs=end_epoch,
                    initial_epoch=self.current_epoch,
                    steps_per_epoch=data.steps,
                    callbacks=callbacks,
                    shuffle=False,  # the data module shuffles
                    verbose=0,
                )
            except BaseException as error:  # a guard's stop, Ctrl-C, a full disk or a bug: give the terminal back
                if progress:
                    progress.on_train_end()
                full = None
                if isinstance(error, OSError):
                    full = disk_full(error, interrupt.epoch, saved_bytes, self.backup_dir or ".")
                if full is None:
                    raise
                if backup is not None:
                    backup.discard_partial_files()
                raise full from error
        if profiler:
            console.print(profiler.table())
        return history

    @property
    def compile_options(self) -> dict:
        return {"jit_compile": self.jit_compile, "run_eagerly": self.run_eagerly}

    def _evaluate(self, classifier: FractureClassifier, dataset, prefix: str) -> dict[str, float]:
        model = self.build(classifier)
        if not model.compiled:
            classifier.compile(**self.compile_options)
        with ends_of_passes_expected():
            results = model.evaluate(dataset, verbose=0, return_dict=True)
        return {f"{prefix}/{key}": float(value) for key, value in results.items()}

    def validate(self, classifier: FractureClassifier, datamodule) -> dict[str, float]:
        """Metrics on the validation split, as `val/<name>`."""
        check_image_size(classifier, datamodule)
        dataset, _ = limited(datamodule.val_dataloader(), datamodule.num_batches("val"), self.limit_val_batches)
        return self._evaluate(classifier, dataset, "val")

    def test(self, classifier: FractureClassifier, datamodule) -> dict[str, float]:
        """Metrics on the test split, as `test/<name>`."""
        check_image_size(classifier, datamodule)
        return self._evaluate(classifier, datamodule.test_dataloader(), "test")

    def predict(self, classifier: FractureClassifier, datamodule, split: str = "val") -> np.ndarray:
        """P(positive class) for every image of `split`, in file order."""
        check_image_size(classifier, datamodule)
        model = self.build(classifier)
        return predict_full_batches(model.predict_on_batch, datamodule.predict_dataloader(split), datamodule.batch_size)
