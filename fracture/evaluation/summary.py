"""The rich terminal summary of an evaluation's headline numbers."""

from __future__ import annotations

from rich.table import Table

from fracture.console import console

HEADLINE_KEYS = ("auroc", "sensitivity", "specificity", "precision", "f1", "brier", "ece", "threshold", "n")


def print_summary(results: dict, splits, output_dir) -> None:
    table = Table(title="evaluation (threshold chosen on val)")
    table.add_column("metric", style="cyan")
    for split in splits:
        table.add_column(split, justify="right")
    for key in HEADLINE_KEYS:
        cells = []
        for split in splits:
            value = results[f"{split}/{key}"]
            if key == "auroc":
                low, high = results[f"{split}/auroc_ci_low"], results[f"{split}/auroc_ci_high"]
                cells.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
            else:
                cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
        table.add_row(key, *cells)
    console.print(table)
    console.print(f"report: {output_dir}/report.md")
