"""debug=profiler: the phase table counts every batch and validation."""

import pytest

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.training.profiler import PhaseProfiler

pytestmark = pytest.mark.backend


def test_profiler_times_every_phase(synthetic_root, monkeypatch):
    created = []
    original = PhaseProfiler.__init__

    def remember(self):
        original(self)
        created.append(self)

    monkeypatch.setattr(PhaseProfiler, "__init__", remember)
    datamodule = FractureDataModule(synthetic_root, image_size=48, batch_size=8, group_by="filename")
    trainer = Trainer(epochs=2, limit_train_batches=3, limit_val_batches=1, profile=True, progress=False)
    trainer.fit(FractureClassifier("tiny_cnn", weights=None, image_size=48, dense_units=8), datamodule)
    profiler = created[0]
    assert profiler.counts["train step"] == 6 and profiler.counts["callbacks"] == 6
    assert profiler.counts["validation"] == 2
    assert profiler.counts["data"] == 4  # between batches within an epoch: 2 per epoch
    assert all(total >= 0 for total in profiler.totals.values()) and profiler.totals["train step"] > 0
