"""External validation: a model judged on data from elsewhere, and, when a site asks, adopted there honestly.

On external data the model keeps the threshold and calibration chosen on its own training data's validation
split (`Evaluator(external=True)`), and the report shows that validation's figures beside the external ones:
a drop between the two is what a new site should expect. A site that will use the model may refit only the
calibration and threshold on a labelled part of its own images (`eval.recalibrate_fraction`): that part is
cut by group, stratified by label, the refit model is written as `site_model.keras`, and every figure is
reported on the rest, which neither the training nor the refit has seen.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from fracture.data.folders import SplitFiles
from fracture.errors import ConfigError, DataError
from fracture.evaluation.calibration import fit_calibration
from fracture.evaluation.threshold import choose_threshold
from fracture.models.calibration import Calibration
from fracture.models.checkpoint import update_metadata
from fracture.run_folder import RunFolder

# The training run's validation figures that the external report shows beside its own.
COMPARED = ("auroc", "auroc_ci_low", "auroc_ci_high", "sensitivity", "specificity", "brier", "ece", "n")


def training_figures(ckpt_path: str | Path) -> dict[str, float]:
    """The validation figures of the run that trained `ckpt_path` (`<run>/checkpoints/x.keras`), from its
    `metrics.json`; {} when the checkpoint is not in a run folder."""
    metrics = RunFolder(Path(ckpt_path).expanduser().resolve().parent.parent).metrics()
    return {key: metrics[f"val/{key}"] for key in COMPARED if f"val/{key}" in metrics}


def site_parts(files: SplitFiles, fraction: float, seed: int) -> tuple[SplitFiles, SplitFiles]:
    """(the labelled part a site refits on, the rest): whole groups, stratified by label."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"eval.recalibrate_fraction must be between 0 and 1, got {fraction}.")
    folds = max(2, round(1.0 / fraction))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        rest, fit = next(splitter.split(np.zeros(len(files)), files.labels, files.groups))
    except ValueError as error:
        raise DataError(f"cannot set {fraction:.0%} of {len(files)} images apart by group: {error}") from error
    return files.subset(fit, f"{files.name}_site_fit"), files.subset(rest, f"{files.name}_site_rest")


def adopt_at_site(evaluator, split: str, fraction: float, output_dir: Path) -> tuple[str, int]:
    """Refit the calibration and threshold on a labelled part of `split`, as `site_model.keras` in
    `output_dir` (the training checkpoint is left as it is), and make the evaluator use them; returns the
    name of the part left to report on, and how many images the refit used."""
    evaluator.prepare()  # the training's calibration method and threshold rule
    fit_part, rest = site_parts(evaluator.datamodule.files(split), fraction, evaluator.seed)
    for part in (fit_part, rest):
        evaluator.datamodule.add_split(part.name, part)
    y_fit, raw_fit, _ = evaluator.raw_predictions(fit_part.name)
    if len(np.unique(y_fit)) < 2:
        raise DataError(f"the {fit_part.name} part holds one class only; use a larger eval.recalibrate_fraction.")
    stored = Calibration.from_dict(evaluator.metadata.get("calibration"))
    method = stored.method if stored else None
    calibration = fit_calibration(method, y_fit, raw_fit) if method else None
    p_fit = calibration(raw_fit) if calibration else raw_fit
    threshold, rule = choose_threshold(y_fit, p_fit, evaluator.target_sensitivity)
    site_model = Path(output_dir) / "site_model.keras"
    site_model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(evaluator.ckpt_path, site_model)
    evaluator.metadata = update_metadata(
        site_model,
        threshold=threshold,
        threshold_source="site",
        threshold_method=rule,
        threshold_scale="calibrated" if calibration else "raw",
        calibration=calibration.to_dict() if calibration else None,
    )
    evaluator.ckpt_path, evaluator.calibration = site_model, calibration
    return rest.name, len(fit_part)
