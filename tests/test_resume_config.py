"""What a resume may change: more epochs, the progress bar, the loggers; never the model, the data or the schedule."""

import pytest

from fracture.errors import ConfigError
from fracture.resume_config import RESUMABLE_CHANGES, changed_settings, check_resumable

RUN = {
    "data": {"image_size": 64, "augmentation": {"zoom": 0.2}},
    "model": {"dense_units": 16, "optimizer": {"lr": 1e-3}},
    "trainer": {"epochs": 5, "progress": True},
    "logger": {"csv": {"_target_": "CSVLogger"}},
    "callbacks": {},
    "seed": 42,
}


def changed(**overrides):
    """RUN with dotted keys replaced (a None value removes the key)."""
    config = {key: (dict(value) if isinstance(value, dict) else value) for key, value in RUN.items()}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = config
        for parent in parents:
            node[parent] = dict(node[parent])
            node = node[parent]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    return config


def test_more_epochs_another_progress_bar_and_loggers_may_change():
    check_resumable(RUN, changed(trainer__epochs=10, trainer__progress=False, logger={"tensorboard": {}}), "run")
    assert changed_settings(RUN, RUN) == []
    assert {"trainer.epochs", "trainer.progress", "logger"} <= set(RESUMABLE_CHANGES)


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"data__image_size": 96}, "data.image_size (64 -> 96)"),
        ({"model__dense_units": 128}, "model.dense_units (16 -> 128)"),
        ({"model__optimizer": {"lr": 1e-2}}, "model.optimizer.lr (0.001 -> 0.01)"),
        ({"data__augmentation": None}, "data.augmentation.zoom (0.2 -> 'unset')"),
        ({"callbacks": {"early_stopping": {"patience": 2}}}, "callbacks.early_stopping.patience ('unset' -> 2)"),
        ({"seed": 7}, "seed (42 -> 7)"),
    ],
)
def test_changes_to_the_model_the_data_or_the_schedule_are_refused_by_name(overrides, named):
    with pytest.raises(ConfigError, match="would change the model, the data or the schedule") as refused:
        check_resumable(RUN, changed(**overrides), "outputs/train/runs/x")
    assert named in str(refused.value) and "resume=outputs/train/runs/x" in str(refused.value)
