"""Write the configuration reference (`docs/configuration.md`) from the files in `conf/`.

Every key of every config file is listed with its value and the comment written beside it or above it, so
the reference says what the configs say. `tests/test_docs.py` fails when the page is older than `conf/`:

    python docs/config_reference.py            # rewrite docs/configuration.md
    python docs/config_reference.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
PAGE = REPO / "docs" / "configuration.md"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")
INTRO = """\
# Configuration reference

Generated from `conf/` by `python docs/config_reference.py`; a test fails when it is out of date. Each entry
point composes one file at the top of `conf/` (`train.yaml` for `python -m fracture.train`, `eval.yaml`, ...);
a group (`conf/data/`, `conf/model/`, ...) is chosen by name (`data=synthetic`) and its keys sit under the
group's name (`data.image_size`) unless the file says `# @package _global_`. Any key can be set on the command
line (`trainer.epochs=3`); an unknown key is an error (`trainer.epochz=3` fails; add new keys with `+`).
`python -m fracture.train --help` lists the groups, `--cfg job` prints the composed config.

Metric names are slash-namespaced wherever a user reads them (progress bars, `history.csv`, `metrics.json`,
plots): `train/loss`, `val/auc_approx`, `val/precision`, `train/lr`. Two AUCs, two names: `val/auc_approx` is
Keras' streaming AUC (200 fixed thresholds, accumulated during training; what checkpoints are chosen by), and
`val/auroc` is evaluation's exact AUROC (scikit-learn, on the best checkpoint, with a bootstrap interval).
"""


def package_of(path: Path, text: str) -> str:
    """Where a file's keys land in the composed config: its `# @package` line, else its group's path."""
    match = re.search(r"^# @package (\S+)", text, re.MULTILINE)
    if match:
        return "" if match.group(1) == "_global_" else match.group(1)
    return ".".join(path.relative_to(CONF).parent.parts)


def comments(text: str) -> dict[str, str]:
    """Dotted key -> the comment on its line and the comment lines right above it (in the file's own keys)."""
    found, stack, above = {}, [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if not stripped.startswith("# @package"):
                above.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            above = []
            continue
        depth = len(match["indent"])
        stack = [(d, k) for d, k in stack if d < depth] + [(depth, match["key"])]
        beside = match["rest"].split(" #", 1)[1].strip() if " #" in match["rest"] else ""
        found[".".join(key for _, key in stack)] = " ".join([*above, beside]).strip()
        above = []
    return found


def leaves(config, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) of every leaf; lists and empty mappings are leaves, `defaults` is left out."""
    items = []
    for key, value in config.items():
        if not prefix and key == "defaults":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items += leaves(value, f"{name}.")
        else:
            items.append((name, value))
    return items


def note_of(key: str, described: dict[str, str]) -> str:
    """A key's comment. A key with no line of its own sits in a one-line mapping (`size: {train: 32}  # ...`)
    and gets that mapping's comment."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in described:
            return described[".".join(parts[:end])]
    return ""


def defaults_entry(item) -> str:
    """`group: option` of a defaults-list item, or the item itself (`_self_`)."""
    return ", ".join(f"{k}: {v}" for k, v in item.items()) if isinstance(item, dict) else str(item)


def prose(comment: str) -> str:
    """A YAML comment as Markdown text: `<root>` is no HTML tag, `[x]` no link, `|` no table border."""
    return comment.replace("<", "&lt;").replace("[", "\\[").replace("|", "\\|")


def shown(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`[{', '.join(map(str, value))}]`"
    return f"`{value}`".replace("|", "\\|")


def file_section(path: Path) -> str:
    text = path.read_text()
    relative = path.relative_to(CONF)
    package = package_of(path, text)
    group = "/".join(relative.parent.parts)
    # A file's header is its comment block before the first key (or before `defaults:`).
    lead = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lead.append(line.lstrip("#").strip())
    chosen = f"`{group}={relative.stem}`" if group else f"the entry point's own file (`{relative.name}`)"
    lines = [f"## `conf/{relative.as_posix()}`", "", f"Chosen by {chosen}; keys under `{package or '(top level)'}`."]
    if lead:
        lines += ["", *(f"> {prose(line)}  " for line in lead)]
    described = comments(text)
    entries = leaves(OmegaConf.to_container(OmegaConf.create(text), resolve=False))
    if entries:
        lines += ["", "| key | value | what it sets |", "|---|---|---|"]
        for key, value in entries:
            full = f"{package}.{key}" if package else key
            note = prose(note_of(key, described))
            lines.append(f"| `{full}` | {shown(value)} | {note} |")
    defaults = OmegaConf.to_container(OmegaConf.create(text)).get("defaults")
    if defaults:
        listed = ", ".join(f"`{defaults_entry(item)}`" for item in defaults)
        lines += ["", f"Defaults list: {listed}."]
    return "\n".join(lines)


def reference() -> str:
    files = sorted(CONF.rglob("*.yaml"), key=lambda p: (len(p.relative_to(CONF).parts) > 1, p.as_posix()))
    return INTRO + "\n" + "\n\n".join(file_section(path) for path in files) + "\n"


if __name__ == "__main__":
    page = reference()
    if "--check" in sys.argv[1:]:
        if not PAGE.is_file() or PAGE.read_text() != page:
            sys.exit(f"{PAGE} is out of date with conf/: run python docs/config_reference.py")
    else:
        PAGE.write_text(page)
