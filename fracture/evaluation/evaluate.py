"""Evaluate a checkpoint: choose the threshold on validation, then compute metrics, plots and a report.

The threshold is always chosen on the validation split and stored in the checkpoint, so that `predict` and
later evaluations use it without being told. Test metrics use that stored threshold, never one fitted on
test.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracture.data.health import record_problems
from fracture.data.pipeline import predict_full_batches
from fracture.errors import ConfigError
from fracture.evaluation import plots
from fracture.evaluation.calibration import calibration_scores, fit_calibration
from fracture.evaluation.cohorts import study_level, study_threshold, subgroup_results, write_studies
from fracture.evaluation.explanations import explain_splits
from fracture.evaluation.external import adopt_at_site, training_figures
from fracture.evaluation.metrics import binary_metrics, classification_report, group_level
from fracture.evaluation.report import write_report
from fracture.evaluation.threshold import choose_threshold, threshold_rule
from fracture.io import write_text_atomic
from fracture.models.calibration import Calibration
from fracture.models.checkpoint import load_checkpoint, update_metadata
from fracture.models.engines import Engine, choose_engine, engine_for
from fracture.run_folder import RunFolder

log = logging.getLogger(__name__)


@dataclass
class SplitEvaluation:
    """What one split's evaluation produced: slash-named metrics, plot files and sklearn's text report."""

    split: str
    results: dict
    figures: dict[str, Path] = field(default_factory=dict)
    report_text: str = ""
    subgroups: list[dict] = field(default_factory=list)  # `cohorts.subgroup_results` rows


class Evaluator:
    """Evaluates one checkpoint on the splits of a data module, predicting each split at most once.

    Args:
        ckpt_path: a `.keras` file written by fracture.
        datamodule: a `FractureDataModule` with the checkpoint's image size and classes.
        target_sensitivity: choose the threshold that reaches this validation sensitivity instead of
            maximising Youden's J.
        calibration: fit this calibration (`platt`, `isotonic`, `temperature`) on validation, or None for the
            network's own output. The threshold is chosen on the calibrated scale, both are stored in the
            checkpoint together, and every consumer (`Predictor`, the service, exports) applies them.
        bootstrap_resamples: resamples for the AUROC interval (resampling groups where they are known).
        study_aggregation: a study's probability from its images' (`mean`, as MURA, or `max`).
        external: the data is not the one the model was trained on: keep the threshold and calibration that
            the checkpoint holds from its training data's validation split, never fit them on this data.
        runtime: the inference engine of the predictions (`fracture.models.engines`: auto, keras, onnxruntime,
            openvino), checked against Keras when built.
    """

    def __init__(
        self,
        ckpt_path,
        datamodule,
        target_sensitivity=None,
        calibration=None,
        bootstrap_resamples=1000,
        seed=0,
        study_aggregation="mean",
        external=False,
        runtime="auto",
    ):
        choose_engine(runtime, setting="eval.runtime")  # a wrong name fails before any work
        self.runtime = runtime
        self._engine: Engine | None = None
        self.ckpt_path = Path(ckpt_path)
        self.model, self.metadata = load_checkpoint(self.ckpt_path, compile=False)
        self.datamodule = datamodule
        self.target_sensitivity = target_sensitivity
        self.calibration_method = calibration
        self.calibration: Calibration | None = None
        self._prepared = False
        self.bootstrap_resamples = bootstrap_resamples
        self.seed = seed
        self.study_aggregation = study_aggregation
        self.external = external
        self._predictions: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        self.studies: dict[str, tuple] = {}  # split -> `cohorts.study_level` of its predictions

    def raw_predictions(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(labels, the network's P(positive), group ids) for every image of `split`, in file order."""
        if split not in self._predictions:
            files = self.datamodule.files(split)
            dataset = self.datamodule.predict_dataloader(split)
            probabilities = predict_full_batches(self.engine(len(files)), dataset, self.datamodule.batch_size)
            self._predictions[split] = (files.labels.astype(int), probabilities, files.groups)
        return self._predictions[split]

    def engine(self, images: int) -> Engine:
        """The engine predictions run on, built on first use for a job of `images` images."""
        if self._engine is None:
            self._engine = engine_for(self.model, self.runtime, images, setting="eval.runtime", batched=True)
        return self._engine

    def predictions(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """As `raw_predictions`, with the checkpoint's calibration applied: the scale users see."""
        self.prepare()
        y_true, raw, groups = self.raw_predictions(split)
        return y_true, self.calibration(raw) if self.calibration else raw, groups

    def prepare(self) -> None:
        """Fit the calibration and choose the threshold on validation, and store both in the checkpoint in one
        atomic update; reuse them when the checkpoint already holds the same rule and calibration method."""
        if self._prepared:
            return
        rule = threshold_rule(self.target_sensitivity)
        stored = Calibration.from_dict(self.metadata.get("calibration"))
        same = (
            self.metadata.get("threshold_source") == "val"
            and self.metadata.get("threshold_method") == rule
            and (stored.method if stored else None) == self.calibration_method
        )
        if self.external and self.metadata.get("threshold_source") not in ("val", "site"):
            raise ConfigError(
                f"{self.ckpt_path} holds no threshold chosen on its training data's validation split, which an "
                "external evaluation keeps; evaluate it on its own data first (python -m fracture.eval split=val)."
            )
        if same or self.external:
            self.calibration = stored
        else:
            y_val, raw_val, _ = self.raw_predictions("val")
            method = self.calibration_method
            self.calibration = fit_calibration(method, y_val, raw_val) if method else None
            p_val = self.calibration(raw_val) if self.calibration else raw_val
            threshold, method = choose_threshold(y_val, p_val, self.target_sensitivity)
            self.metadata = update_metadata(
                self.ckpt_path,
                threshold=threshold,
                threshold_source="val",
                threshold_method=method,
                threshold_scale="calibrated" if self.calibration else "raw",
                calibration=self.calibration.to_dict() if self.calibration else None,
            )
        self._prepared = True

    def threshold(self) -> float:
        self.prepare()
        return self.metadata["threshold"]

    def leakage(self, split: str) -> dict:
        """Files of `split` that share a group (a radiograph, with content groups) with train, warned about."""
        if split == "train" or self.external or not self.datamodule.has_split("train"):
            return {}
        files, groups = self.datamodule.shared_with_train(split)
        if files:
            log.warning(
                "%d of %d %s images (%d groups) show a radiograph that is also in train: their scores are "
                "inflated. Cut the data by group with data.split=grouped.",
                files,
                len(self.datamodule.files(split)),
                split,
                groups,
            )
        return {f"{split}/shared_with_train/files": files, f"{split}/shared_with_train/groups": groups}

    def write_predictions(self, split: str, path: Path) -> Path:
        """`<split>_predictions.csv`: every image's path, label, P(positive) (calibrated when the checkpoint
        holds a calibration), the network's own output and group (for pooled cross-validation scores and for
        looking at errors)."""
        y_true, y_prob, groups = self.predictions(split)
        raw = self.raw_predictions(split)[1]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "label", "probability", "network_output", "group"])
        for row in zip(self.datamodule.files(split).paths, y_true, y_prob, raw, groups, strict=True):
            writer.writerow([row[0], int(row[1]), f"{row[2]:.6f}", f"{row[3]:.6f}", row[4]])
        return write_text_atomic(path, buffer.getvalue())

    def evaluate(self, split: str, plot_dir: Path) -> SplitEvaluation:
        threshold = self.threshold()
        y_true, y_prob, groups = self.predictions(split)
        class_names = (self.metadata["positive_class"], self.metadata["negative_class"])
        scores = binary_metrics(y_true, y_prob, threshold, groups, self.bootstrap_resamples, self.seed)
        results = {f"{split}/{key}": value for key, value in scores.items()}
        results[f"{split}/threshold_method"] = self.metadata["threshold_method"]
        results.update(self.leakage(split))
        y_group, p_group, group_names = group_level(y_true, y_prob, groups)
        results[f"{split}/groups"] = len(group_names)
        if len(group_names) < len(y_true):  # several images per source radiograph: report per group too
            group_scores = binary_metrics(y_group, p_group, threshold, None, self.bootstrap_resamples, self.seed)
            results.update({f"{split}/group/{key}": value for key, value in group_scores.items()})

        reliability = {"model": y_prob}
        if self.calibration:
            raw = self.raw_predictions(split)[1]
            fitted_on = self.raw_predictions("val")[:2]  # the split the calibration was fitted on
            calibration = calibration_scores(self.calibration.method, y_true, raw, y_prob, fitted_on)
            results.update({f"{split}/calibration/{key}": value for key, value in calibration.items()})
            reliability = {"network output": raw, f"{self.calibration.method}-calibrated": y_prob}
        figures = plots.split_figures(y_true, y_prob, threshold, scores, class_names, reliability, plot_dir / split)
        files, rows = self.datamodule.files(split), []
        if files.subgroups:
            extra, rows = subgroup_results(
                split, y_true, y_prob, threshold, files.subgroups, groups, self.bootstrap_resamples, self.seed
            )
            results.update(extra)
            overall = (scores["auroc"], scores["auroc_ci_low"], scores["auroc_ci_high"])
            figures["AUROC by subgroup"] = plots.forest_plot(rows, overall, plot_dir / f"{split}_subgroups.png")
        if files.studies is not None:
            results.update(self.study_results(split))
        report_text = classification_report(y_true, y_prob, threshold, class_names)
        return SplitEvaluation(split, results, figures, report_text, rows)

    def study_results(self, split: str) -> dict:
        """Study-level figures: each study's probability aggregated from its images', judged at a threshold
        chosen on the validation split's studies (the image threshold for external data)."""
        y_true, y_prob, _ = self.predictions(split)
        files = self.datamodule.files(split)
        threshold, source = self.threshold(), "the image threshold"
        if not self.external and self.datamodule.has_split("val") and self.datamodule.files("val").studies:
            y_val, p_val, _ = self.predictions("val")
            studies_val = self.datamodule.files("val").studies
            threshold = study_threshold(y_val, p_val, studies_val, self.study_aggregation, self.target_sensitivity)
            source = "validation studies"
        self.studies[split] = study_level(y_true, y_prob, files.studies, self.study_aggregation)
        labels, probabilities = self.studies[split][:2]
        scores = binary_metrics(labels, probabilities, threshold, None, self.bootstrap_resamples, self.seed)
        results = {f"{split}/study/{key}": value for key, value in scores.items()}
        results[f"{split}/study/aggregation"] = self.study_aggregation
        results[f"{split}/study/threshold_source"] = source
        return results


def evaluate_checkpoint(
    ckpt_path,
    datamodule,
    splits=("val",),
    output_dir=".",
    target_sensitivity: float | None = None,
    calibration: str | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    training_curves: Path | None = None,
    qualifiers: list[str] | None = None,
    study_aggregation: str = "mean",
    external: bool = False,
    recalibrate_fraction: float = 0.0,
    explain: dict | None = None,
    runtime: str = "auto",
) -> dict:
    """Evaluate `ckpt_path` on `splits`; write `metrics.json` (merged with any existing), `plots/` and `report.md`.
    `qualifiers` are sentences about how the model was trained that the report puts before its numbers.
    With `external`, the data is not the one the model was trained on (`fracture.evaluation.external`): the
    training's threshold and calibration are kept, or, with `recalibrate_fraction`, refit on that share of
    each split (as `site_model.keras`) and every figure reported on the rest. With `explain` (the fields of
    `explanations.ExplainSettings`, `annotations` a COCO file of boxes), the model's explanations are scored
    against the boxes on each split's fractured images (`fracture.evaluation.localisation`). `runtime` is the
    predictions' inference engine (`Evaluator`).

    Returns the metrics, slash-namespaced: `val/auroc`, `test/sensitivity`, `test/group/auroc`, ...
    """
    output_dir = Path(output_dir)
    if recalibrate_fraction and not external:
        raise ConfigError("eval.recalibrate_fraction refits on external data only (fracture.eval external=true).")
    datamodule.recheck()  # files deleted or broken during training must not break the predictions below
    problems = datamodule.file_problems()
    evaluator = Evaluator(
        ckpt_path,
        datamodule,
        target_sensitivity,
        calibration,
        bootstrap_resamples,
        seed,
        study_aggregation,
        external,
        runtime,
    )
    context = {}
    if external:
        context = {"root": str(datamodule.root), "training": training_figures(ckpt_path)}
        if recalibrate_fraction:
            parts = [adopt_at_site(evaluator, split, recalibrate_fraction, output_dir) for split in splits]
            context["site_parts"] = dict(parts)  # the part reported on -> images the refit used
            splits = [part for part, _ in parts]
    evaluations = [evaluator.evaluate(split, output_dir / "plots") for split in splits]
    explanation = (evaluator.model, evaluator.metadata, datamodule, splits, explain, bootstrap_resamples, seed)
    scored, explained = explain_splits(*explanation, output_dir / "plots")
    for evaluation in evaluations:
        evaluation.results.update(scored.get(evaluation.split, {}))
    for split in splits:
        evaluator.write_predictions(split, output_dir / f"{split}_predictions.csv")
        if split in evaluator.studies:
            write_studies(output_dir / f"{split}_studies.csv", *evaluator.studies[split])
    results = {key: value for evaluation in evaluations for key, value in evaluation.results.items()}
    results["evaluation/external"] = bool(external)
    results.update({f"training/val/{key}": value for key, value in context.get("training", {}).items()})
    results.update(record_problems(problems, output_dir))
    RunFolder(output_dir).add_metrics(results)
    write_report(
        output_dir / "report.md",
        evaluations,
        evaluator.metadata,
        Path(ckpt_path),
        training_curves,
        problems,
        qualifiers or (),
        context,
        explained,
    )
    return results
