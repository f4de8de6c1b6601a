"""What a resumed run may change: the settings that leave the model, the data and the schedule as they were.

A resume continues the run's own weights, optimizer and epoch count from its backup, so it must train the
same model on the same data in the same way; only then is the resumed run the run it continues. Resuming
after a 64 px run with `data.image_size=96` would mix epochs of both sizes in `history.csv`, and another
`model.dense_units` fails inside Keras. `resume=` therefore compares the new settings with the ones the run
started with (its `.hydra/config.yaml`) and refuses every difference outside `RESUMABLE_CHANGES`.
"""

from __future__ import annotations

from collections.abc import Mapping

from fracture.errors import ConfigError

# Settings a resume may change, as dotted keys or key prefixes, with why each one is harmless.
RESUMABLE_CHANGES = {
    "resume": "names the run to continue",
    "trainer.epochs": "more epochs continue the same schedule (fewer end it where the backup is)",
    "trainer.progress": "only how progress is shown",
    "logger": "only where metrics are also written",
    "description": "a label",
    "tags": "labels",
    "paths.output_dir": "the run folder itself",
    "compilation_cache": "where JAX keeps compiled programs: same results",
    "paths.cache_dir": "where caches live; their entries are keyed by content, so the same results",
    "trainer.feature_cache_dir": "where cached features live (keyed by content): same results",
    "data.audit_cache": "where audits live (keyed by content): same results",
    "data.audit.workers": "threads of the audit: same groups",
    "trainer.backup_dir": "the backup is the run folder's backup/ (fracture.run_folder), wherever a run set it",
    "fast_depthwise_conv": "the same convolution, computed faster",
    "trainer.process_id": "a training process's place in its group, which the command or launcher gives it",
    "trainer.coordinator": "where the training processes meet: the same shards and steps",
    "trainer.peer_timeout_s": "how long a silent process is waited for",
    "evaluate": "evaluation runs after training and changes nothing in it",
    "eval": "evaluation runs after training and changes nothing in it",
}


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """{"a.b": value} for every leaf of a nested mapping (lists are leaves)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def resumable(key: str) -> bool:
    return any(key == allowed or key.startswith(f"{allowed}.") for allowed in RESUMABLE_CHANGES)


UNSET = "unset"  # a key that only one of the two configs has


def changed_settings(original: Mapping, current: Mapping) -> list[tuple[str, object, object]]:
    """(key, the run's value, the new value) for every setting outside `RESUMABLE_CHANGES` that differs."""
    before, after = flatten(original), flatten(current)
    return [
        (key, before.get(key, UNSET), after.get(key, UNSET))
        for key in sorted(set(before) | set(after))
        if not resumable(key) and before.get(key, UNSET) != after.get(key, UNSET)
    ]


def check_resumable(original: Mapping, current: Mapping, run: str) -> None:
    """Refuse, as one `ConfigError` line naming the keys, a resume whose settings change the model, the
    data or the schedule of the run it continues."""
    changes = changed_settings(original, current)
    if not changes:
        return
    listed = ", ".join(f"{key} ({old!r} -> {new!r})" for key, old, new in changes)
    raise ConfigError(
        f"resume={run}: {listed} would change the model, the data or the schedule of the run it continues. "
        "Resume with the run's own settings (its .hydra/config.yaml), or start a new run; a resume may change "
        f"only {', '.join(RESUMABLE_CHANGES)}."
    )
