"""Training stages: what trains in each part of a run, described in config (`stages` in `conf/train.yaml`).

The notebook's recipe is one stage, the head over a frozen backbone; its own next step is a second one that
fine-tunes the top backbone blocks at a low learning rate. Each stage says whether its backbone trains,
which decides whether it can train on cached backbone features (`fracture.training.feature_cache`): features
stay valid only while the backbone that computed them does not change.

    stages = [HeadStage("fit", epochs=10), FineTuneStage("finetune", blocks=2, epochs=5, learning_rate=1e-5)]
    run_recipe(data, classifier, trainer, "run", stages=stages)

Stages run in order and continue one epoch count; each backs up under its own name (`<run>/backup/<name>/`),
so a resumed run continues the stage it was in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fracture.errors import ConfigError
from fracture.models.classifier import FractureClassifier

log = logging.getLogger(__name__)
# The name of a run's one stage when nothing else is asked for; progress lines leave it out.
DEFAULT_STAGE = "fit"


@dataclass
class HeadStage:
    """Train the model as built: the head, and the backbone too unless the classifier freezes it.

    Args:
        name: the stage's name in logs and in the backup folder.
        epochs: epochs of this stage (None: the trainer's `epochs`); 0 skips it.
        learning_rate: the optimizer's rate for this stage (None: the classifier's).
    """

    name: str = DEFAULT_STAGE
    epochs: int | None = None
    learning_rate: float | None = None

    def __post_init__(self):
        if self.epochs is not None and self.epochs < 0:
            raise ConfigError(f"stage {self.name!r}: epochs must be at least 0, got {self.epochs}.")

    @property
    def enabled(self) -> bool:
        return self.epochs != 0

    def prepare(self, classifier: FractureClassifier) -> None:
        """Set which layers train in this stage (the model as built: nothing to change)."""

    def trains_backbone(self, classifier: FractureClassifier) -> bool:
        """Whether backbone weights change in this stage, so that cached features would go stale."""
        return any(layer.trainable_weights for layer in classifier.backbone_layers())


@dataclass
class FineTuneStage(HeadStage):
    """Unfreeze the top `blocks` backbone blocks (BatchNormalization stays frozen) and train on, usually at a
    low learning rate. `blocks=0` or `epochs=0` skips the stage."""

    name: str = "finetune"
    blocks: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.blocks < 0:
            raise ConfigError(f"stage {self.name!r}: blocks must be at least 0, got {self.blocks}.")

    @property
    def enabled(self) -> bool:
        return bool(self.blocks) and self.epochs != 0

    def prepare(self, classifier: FractureClassifier) -> None:
        unfrozen = classifier.unfreeze_top_blocks(self.blocks)
        log.info("stage %s: fine-tuning blocks %s at lr %s", self.name, unfrozen, self.learning_rate)

    def trains_backbone(self, classifier: FractureClassifier) -> bool:
        return True


def enabled_stages(stages) -> list[HeadStage]:
    """The stages that will run, in order; at least one."""
    chosen = [stage for stage in stages if stage.enabled]
    if not chosen:
        raise ConfigError("every training stage is switched off (epochs 0); nothing would train.")
    names = [stage.name for stage in chosen]
    if len(set(names)) != len(names):
        raise ConfigError(f"training stages need distinct names (their backups are kept by name), got {names}.")
    return chosen
