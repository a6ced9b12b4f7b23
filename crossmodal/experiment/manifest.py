"""An experiment folder's manifest: its rows, each row's resolved config, and the config's hash."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossmodal.errors import ConfigError

MANIFEST = "experiment.yaml"
#: Keys that name or locate a run without changing what it computes (left out of its hash).
NOT_HASHED = ("name", "out_dir", "resume", "trainer.progress", "data.num_workers")
#: Config fields added after runs were recorded, with the value under which a run computes what
#: those runs did: left out of the hash while they hold it, so that a new option does not orphan
#: every recorded run (a test checks the recorded runs' hashes).
HASHED_UNLESS = {"data.labeled_per_batch": 0, "data.unlabeled_2d": False, "model.pose_losses": [],
                 "model.pose_loss_options": {}, "data.augment.crop_errors": "", "data.augment.crop_error_rate": 1.0,
                 "data.augment.crop_error_max_turn": 180.0}

@dataclass
class Row:
    name: str  # identifier, used in the CSV and --rows
    label: str  # as printed in the table, e.g. "S2 R→C+P"
    config: Path  # the row's training config
    overrides: list[str] = field(default_factory=list)  # extra key=value for this row only
    paper: float | None = None  # the paper's mean EPE (mm) for this row, where published
    # Self-supervised pre-training of the RGB trunk before the row trains (crossmodal/pretrain.py):
    # its settings as name=value (e.g. steps=2000); [] for none. Its time is part of the row's.
    pretrain: list[str] = field(default_factory=list)


@dataclass
class Claim:
    """A claim of the paper that the table checks: ``ratio`` [a, b] holds when mean EPE a / b is at
    most ``at_most``; ``decreasing`` [a, b, ...] holds when the rows' mean EPEs fall in that order."""

    text: str  # as the paper makes it, e.g. "S4 <= 0.8 x S1 in mean EPE"
    kind: str  # "ratio" | "decreasing"
    rows: list[str]
    at_most: float | None = None


@dataclass
class Experiment:
    name: str  # the folder's name: results are written as <name>.md/.csv/.json/_pck.png/_curves.png
    folder: Path
    title: str
    reference: str  # where the paper column comes from (dataset, table)
    seeds: list[int]
    overrides: list[str]  # applied to every row, before the row's own and the command line's
    rows: list[Row]
    claims: list[Claim] = field(default_factory=list)



def _expect(cond: bool, path: Path, key: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"{path}: {key} must be {expected}, got {got!r}")


def _string_list(value: Any, path: Path, key: str) -> list[str]:
    value = [] if value is None else value
    _expect(isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value), path, key,
            "a list of key=value strings", value)
    return list(value)


def load_experiment(folder: str | os.PathLike) -> Experiment:
    """Read ``<folder>/experiment.yaml``; every problem is one line naming the file and key."""
    import yaml

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{folder}: not an experiment folder (no {MANIFEST})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    _expect(isinstance(raw, dict), path, "the top level", "a mapping", type(raw).__name__)
    unknown = set(raw) - {"title", "reference", "seeds", "overrides", "rows", "claims"}
    _expect(not unknown, path, "the top-level keys", "among title, reference, seeds, overrides, rows, claims",
            sorted(unknown))
    seeds = raw.get("seeds", [0])
    _expect(isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds), path, "seeds",
            "a non-empty list of integers", seeds)
    rows_raw = raw.get("rows")
    _expect(isinstance(rows_raw, list) and rows_raw, path, "rows", "a non-empty list", rows_raw)
    rows, names = [], set()
    for i, r in enumerate(rows_raw):
        key = f"rows[{i}]"
        _expect(isinstance(r, dict) and {"name", "config"} <= set(r), path, key, "a mapping with name and config", r)
        unknown = set(r) - {"name", "label", "config", "overrides", "paper", "pretrain"}
        _expect(not unknown, path, f"{key} keys", "among name, label, config, overrides, paper, pretrain",
                sorted(unknown))
        _expect(r["name"] not in names, path, f"{key}.name", "unique", r["name"])
        names.add(r["name"])
        config = folder / str(r["config"])
        _expect(config.is_file(), path, f"{key}.config", "an existing YAML file", str(config))
        paper = r.get("paper")
        _expect(paper is None or isinstance(paper, (int, float)), path, f"{key}.paper", "a number (mm)", paper)
        pretrain = _string_list(r.get("pretrain"), path, f"{key}.pretrain")
        _expect(not pretrain or pretrain_settings(pretrain) is not None, path, f"{key}.pretrain",
                "name=value settings of crossmodal.pretrain.PretrainSettings", pretrain)
        rows.append(Row(str(r["name"]), str(r.get("label", r["name"])), config,
                        _string_list(r.get("overrides"), path, f"{key}.overrides"),
                        None if paper is None else float(paper), pretrain))
    return Experiment(folder.resolve().name, folder, str(raw.get("title", folder.name)), str(raw.get("reference", "")),
                      list(seeds), _string_list(raw.get("overrides"), path, "overrides"), rows,
                      _claims(raw.get("claims"), path, names))


def _claims(raw: Any, path: Path, names: set[str]) -> list[Claim]:
    raw = [] if raw is None else raw
    _expect(isinstance(raw, list), path, "claims", "a list", raw)
    claims = []
    for i, c in enumerate(raw):
        key = f"claims[{i}]"
        kinds = sorted({"ratio", "decreasing"} & set(c)) if isinstance(c, dict) else []
        _expect(isinstance(c, dict) and "text" in c and len(kinds) == 1, path, key,
                "a mapping with text and one of ratio, decreasing", c)
        unknown = set(c) - {"text", "ratio", "decreasing", "at_most"}
        _expect(not unknown, path, f"{key} keys", "among text, ratio, decreasing, at_most", sorted(unknown))
        kind, rows = kinds[0], c[kinds[0]]
        size = "two row names" if kind == "ratio" else "two or more row names"
        _expect(isinstance(rows, list) and (len(rows) == 2 if kind == "ratio" else len(rows) >= 2), path,
                f"{key}.{kind}", f"a list of {size}", rows)
        _expect(set(rows) <= names, path, f"{key}.{kind}", f"rows of this experiment ({', '.join(sorted(names))})", rows)
        bound = c.get("at_most")
        _expect((kind == "ratio") == isinstance(bound, (int, float)), path, f"{key}.at_most",
                "a number for a ratio claim, absent otherwise", bound)
        claims.append(Claim(str(c["text"]), kind, [str(r) for r in rows], None if bound is None else float(bound)))
    return claims


def pretrain_settings(items: list[str]) -> Any:
    """PretrainSettings from name=value strings, or None when a name or value does not fit."""
    from crossmodal.pretrain import PretrainSettings

    defaults = vars(PretrainSettings())
    values = {}
    for item in items:
        name, _, text = item.partition("=")
        if name not in defaults:
            return None
        try:
            values[name] = type(defaults[name])(text)
        except ValueError:
            return None
    return PretrainSettings(**values)


def pretrain_folder(cfg: Any, row: Row) -> str:
    """Where a row's pre-trained trunk lives under the runs folder: one per data, seed and settings,
    so that rows differing only in what follows (the labelled fraction) share it."""
    from dataclasses import asdict

    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in ("labeled_fraction", "drop_unlabeled", "repeat_to_full", "labeled_per_batch", "unlabeled_2d",
                "batch_size", "num_workers"):
        data.pop(key, None)
    plain = {"data": data, "seed": cfg.seed, "settings": asdict(pretrain_settings(row.pretrain))}
    return "pretrain-" + hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:12]


def row_config(exp: Experiment, row: Row, seed: int, overrides: list[str]) -> Any:
    """The resolved config of one (row, seed): defaults <- profile <- row YAML <- overrides. A row
    with ``pretrain`` has its RGB trunk's ``pretrained_path`` set to that pre-training's trunk,
    relative to the runs folder (the runner makes it there when it is missing)."""
    from crossmodal.config import load_config

    cfg = load_config(str(row.config), [*exp.overrides, *row.overrides, *overrides, f"seed={seed}"])
    if row.pretrain:
        trunk = f"{pretrain_folder(cfg, row)}/trunk.pt"
        cfg.model.encoder_options = {**cfg.model.encoder_options,
                                     "rgb_resnet18": {**cfg.model.encoder_options.get("rgb_resnet18", {}),
                                                      "pretrained_path": str(trunk)}}
    return cfg


def config_key(cfg: Any) -> str:
    """A short hash of everything in the config that changes what a run computes."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)

    def parent(dotted: str) -> tuple[dict, str]:
        *parents, leaf = dotted.split(".")
        node = plain
        for p in parents:
            node = node.get(p, {})
        return node, leaf

    for dotted in NOT_HASHED:
        node, leaf = parent(dotted)
        node.pop(leaf, None)
    for dotted, old in HASHED_UNLESS.items():
        node, leaf = parent(dotted)
        if leaf in node and node[leaf] == old:
            node.pop(leaf)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:12]
