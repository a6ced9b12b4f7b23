"""Command-line interface: ``python -m crossmodal <command> [options] [key=value ...]``.

Each command is one small function below, registered in ``COMMANDS`` with its
argument parser. Heavy imports (torch, open3d, lightning) happen inside the
command so that ``--help`` is instant. Errors caused by the user's input
(``CrossmodalError``) print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from crossmodal.errors import CrossmodalError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``func(args) -> exit code`` as a subcommand; ``add_args`` fills its parser."""

    def decorator(add_args: Callable[[argparse.ArgumentParser], None]):
        def wrap(run: Callable[[argparse.Namespace], int]):
            COMMANDS[name] = (help, add_args, run)
            return run

        return wrap

    return decorator


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.preprocess.crop_size=128"
    )


# --------------------------------------------------------------------------- synth

def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (gets training/ and evaluation/)")
    p.add_argument("--train", type=int, default=2000, help="number of training frames")
    p.add_argument("--test", type=int, default=400, help="number of evaluation frames")
    p.add_argument("--seed", type=int, default=0, help="frame i depends only on (seed, split, i)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")


@command("synth", "write the procedural synthetic hand dataset in RHD's on-disk format")(_synth_args)
def cmd_synth(args: argparse.Namespace) -> int:
    from crossmodal.data.synthetic import generate

    if args.train < 0 or args.test < 0:
        raise CrossmodalError(f"--train and --test must be >= 0, got {args.train} and {args.test}")
    generate(args.out, args.train, args.test, seed=args.seed, workers=args.workers)
    print(f"wrote {args.train} training and {args.test} evaluation frames to {args.out}")
    return 0


# --------------------------------------------------------------------------- cache

def _cache_args(p: argparse.ArgumentParser) -> None:
    from crossmodal.registry import DATASETS

    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS.names())}")
    p.add_argument("--root", required=True, help="dataset folder (RHD_published_v2, STB root, or synth --out)")
    p.add_argument("--split", required=True, help="training/evaluation (rhd, synthetic) or train/test (stb)")
    p.add_argument("--out", required=True, help="HDF5 file to write")
    p.add_argument("--config", default=None, help="YAML config whose data.preprocess section is used")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    _add_overrides(p)


@command("cache", "preprocess a dataset split into an HDF5 cache")(_cache_args)
def cmd_cache(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from crossmodal.config import PreprocessConfig, load_config
    from crossmodal.data.cache import build_cache
    from crossmodal.registry import DATASETS

    cfg = load_config(args.config, [f"data.dataset={args.dataset}", *args.overrides])
    dataset = DATASETS.get(args.dataset, key="--dataset")(args.root, args.split)
    pre = PreprocessConfig(**OmegaConf.to_container(cfg.data.preprocess, resolve=True))
    report = build_cache(dataset, args.out, pre, workers=args.workers)
    skipped = f" (indices {report.skipped_indices})" if report.skipped else ""
    print(
        f"wrote {report.written} samples to {report.path} in {report.seconds:.1f} s; "
        f"skipped {report.skipped} frames with no hand pixels{skipped}; config hash {report.config_hash[:12]}"
    )
    return 0


# --------------------------------------------------------------------------- prepare

@command("prepare", "generate the synthetic data (if it is the dataset) and build the train/test caches")(
    lambda p: _train_args(p)
)
def cmd_prepare(args: argparse.Namespace) -> int:
    from crossmodal.config import load_config
    from crossmodal.data.datamodule import build_datamodule

    cfg = load_config(*_split_config_arg(args))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    for split in datamodule.splits():
        print(f"cache ready: {datamodule.cache_path(split)}")
    return 0


# --------------------------------------------------------------------------- config

@command("config", "print the resolved configuration (defaults <- profile <- YAML <- overrides)")(lambda p: _train_args(p))
def cmd_config(args: argparse.Namespace) -> int:
    from crossmodal.config import load_config, to_yaml

    print(to_yaml(load_config(*_split_config_arg(args))), end="")
    return 0


# --------------------------------------------------------------------------- train / eval

def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="YAML config file (optional)")
    _add_overrides(p)


def _split_config_arg(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The optional YAML path and the overrides (a first positional with '=' is an override)."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config, *overrides]
    return config, overrides


@command("train", "train a strategy, then evaluate it on the test split (runs/<name>/)")(_train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from crossmodal.config import load_config
    from crossmodal.train import train

    config, overrides = _split_config_arg(args)
    result = train(load_config(config, overrides))
    if result.metrics is not None:
        m = result.metrics
        print(f"EPE mean {m['epe_mean']:.2f} mm | EPE median {m['epe_median']:.2f} mm | AUC 0-50 {m['auc_0_50']:.3f} | AUC 20-50 {m['auc_20_50']:.3f}")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/latest/checkpoints/best.ckpt)")
    _add_overrides(p)


@command("eval", "evaluate a checkpoint on the test split: table, metrics.json, PCK plot, figure")(_eval_args)
def cmd_eval(args: argparse.Namespace) -> int:
    from crossmodal.train import evaluate

    m = evaluate(args.ckpt, list(args.overrides))
    print(f"EPE mean {m['epe_mean']:.2f} mm | EPE median {m['epe_median']:.2f} mm | AUC 0-50 {m['auc_0_50']:.3f} | AUC 20-50 {m['auc_20_50']:.3f}")
    return 0


def _calibrate_side_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="a pose checkpoint trained with preprocess.mirror_left and a keypoint stage")
    p.add_argument("--frames", type=int, default=800, help="training crops to fit on (default 800)")


@command("calibrate-side", "fit how sure a model's keypoint fit is of a hand's side, into its checkpoint (train does "
         "it when a run ends): predict then weighs both sides' poses")(_calibrate_side_args)
def cmd_calibrate_side(args: argparse.Namespace) -> int:
    from crossmodal.errors import ConfigError
    from crossmodal.side_calibration import calibrate_side

    if args.frames < 1:
        raise ConfigError(f"calibrate-side: --frames must be >= 1, got {args.frames}")
    temperature = calibrate_side(args.ckpt, args.frames)
    if temperature is None:
        raise ConfigError(f"{args.ckpt}: its model needs no side temperature: it saw both sides, or has no 2D keypoint "
                          "stage to tell the side by")
    print(f"calibrate-side: side temperature {temperature:.5f} written into {args.ckpt}")
    return 0


# --------------------------------------------------------------------------- finder

@command("finder", "train the hand finder (whole image -> hand pixels, side, box) on frames with part masks "
                   "(runs/finder-<time>/, runs/latest-finder)")(lambda p: _train_args(p))
def cmd_finder(args: argparse.Namespace) -> int:
    from crossmodal.config import FinderRunConfig, load_config
    from crossmodal.finder.train import train_finder

    config, overrides = _split_config_arg(args)
    run = train_finder(load_config(config, overrides, schema=FinderRunConfig))
    m = run.metrics
    print(f"finder on the {m['dataset']} evaluation split ({m['frames']} frames): mask IoU {m['mask_iou']:.3f} | "
          f"box IoU {m['box_iou']:.3f} | side accuracy {m['side_accuracy']:.3f} | found {m['found_rate']:.3f}")
    print(f"run folder: {run.run_dir}  (metrics.json, report.png, checkpoints/); runs/latest-finder points at it")
    return 0


def _finder_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="pose checkpoint (e.g. runs/latest/checkpoints/best.ckpt)")
    p.add_argument("--finder", default=None, metavar="CKPT", help="finder checkpoint (default: runs/latest-finder)")
    p.add_argument("--limit", type=int, default=0, help="first N frames (default: all)")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="the test split, or the model's validation frames (to choose settings on)")
    p.add_argument("--out", default=None, help="JSON file for the results (default: finder_eval[_validation].json beside --ckpt's run)")
    p.add_argument("--flip-average", action="store_true",
                   help="average the finder's probabilities with the mirror image's (finder.flip_average), whatever its config says")


@command("finder-eval", "end-to-end EPE/AUC with finder crops vs ground-truth crops (test split or validation frames)")(_finder_eval_args)
def cmd_finder_eval(args: argparse.Namespace) -> int:
    from crossmodal.pipeline.end_to_end import end_to_end
    from crossmodal.finder.model import resolve_finder, with_flip_average
    from crossmodal.report import write_metrics_json

    finder = resolve_finder(args.finder, None, args.ckpt)
    if args.flip_average:
        finder = with_flip_average(finder, True)
    result = end_to_end(args.ckpt, finder, args.limit, split=args.split)
    for name, key in (("ground-truth crops", "ground_truth_crops"), ("finder crops", "finder_crops"),
                      ("finder crops, labelled side", "finder_crops_labelled_side"),
                      ("finder crops, side by fit", "finder_crops_side_by_fit")):
        if key not in result:
            continue
        m = result[key]
        print(f"{name:<29} EPE mean {m['epe_mean']:.2f} mm | EPE median {m['epe_median']:.2f} mm | "
              f"AUC 0-50 {m['auc_0_50']:.3f} | AUC 20-50 {m['auc_20_50']:.3f}"
              + (" <- what predict gives" if key == result["predict_row"] else ""))
    print(f"{result['frames']} frames of {result['split']}; finder: box IoU {result['finder_box_iou']:.3f}, side accuracy "
          f"{result['finder_side_accuracy']:.3f}, no hand found in {result['finder_missed']} (whole image used)"
          + (f"; side by the model's fit: accuracy {result['side_by_fit_accuracy']:.3f}" if "side_by_fit_accuracy" in result else ""))
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent) / (
        "finder_eval.json" if args.split == "test" else "finder_eval_validation.json")
    write_metrics_json(result, out)
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- experiment

def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="DIR|key=value",
                   help="experiment folders (e.g. experiments/table1) and key=value overrides for every row")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's own)")
    p.add_argument("--rows", default=None, help="comma-separated row names to run (default: all)")
    p.add_argument("--out", default="runs/experiments", help="where the runs are trained (one folder per config hash)")
    p.add_argument("--results", default="experiments/results", help="where <name>.md/.csv/.json/_pck.png are written")
    p.add_argument("--records", default=None,
                   help="where each finished run's record is kept (default: <results>/runs); a recorded run is not retrained")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each with cpu_count / jobs threads (2 on a 2-core CPU)")
    p.add_argument("--tables-only", action="store_true",
                   help="train nothing: rewrite the tables from the runs finished so far")
    p.add_argument("--plan", action="store_true",
                   help="train nothing, write nothing: list the runs left to train as scripts/campaign.sh items, "
                        "with times estimated from the finished ones")


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CrossmodalError(f"{option}: expected comma-separated integers, got {text!r}") from None


@command("experiment", "run every row of experiment folders (resuming finished rows) and write their tables")(_experiment_args)
def cmd_experiment(args: argparse.Namespace) -> int:
    import shlex

    from crossmodal.experiment import run_experiment

    folders = [t for t in args.targets if "=" not in t]
    overrides = [t for t in args.targets if "=" in t]
    if not folders:
        raise CrossmodalError("experiment: name at least one experiment folder, e.g. experiments/table1")
    seeds = _int_list(args.seeds, "--seeds") if args.seeds else None
    rows = [r for r in args.rows.split(",") if r] if args.rows else None
    if args.plan:
        from crossmodal.experiment.plan import plan_runs, plan_text

        records = args.records or str(Path(args.results) / "runs")
        print(plan_text(plan_runs(folders, overrides, seeds, rows, args.out, records)))
        return 0
    failed = 0
    for folder in folders:
        options = [*(["--seeds", args.seeds] if args.seeds else []), *(["--rows", args.rows] if args.rows else []),
                   *(["--jobs", str(args.jobs)] if args.jobs != 1 else [])]
        command = shlex.join(["python", "-m", "crossmodal", "experiment", folder, *options, *overrides])
        outcomes = run_experiment(folder, overrides, seeds, rows, args.out, args.results, command, args.jobs,
                                  args.tables_only, args.records)
        failed += sum(o.status == "failed" for o in outcomes)
    return 1 if failed else 0


# --------------------------------------------------------------------------- predict

def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/latest/checkpoints/best.ckpt)")
    p.add_argument("--image", required=True, nargs="+", metavar="IMG|DIR", help="images, or folders of images")
    locate = p.add_mutually_exclusive_group()
    locate.add_argument("--mask", nargs="+", metavar="M|DIR",
                        help="hand masks, one per image in the same order (binary, or RHD part labels)")
    locate.add_argument("--bbox", metavar="x,y,w,h", help="hand box in pixels (left column, top row, width, height)")
    locate.add_argument("--finder", metavar="CKPT",
                        help="hand finder checkpoint (default without --mask/--bbox: the one bundled with --ckpt, "
                             "else runs/latest-finder; make finder trains one)")
    locate.add_argument("--whole-image", action="store_true",
                        help="use the whole image as the hand box (images that are already hand crops)")
    p.add_argument("--K", dest="intrinsics", metavar="fx,fy,cx,cy",
                   help="camera intrinsics in pixels (default: focal = image width, centre of the image)")
    p.add_argument("--hand", choices=("left", "right"), help="which hand the images show")
    p.add_argument("--bone-mm", type=float, default=None, metavar="MM",
                   help="length of the middle finger's MCP->PIP bone in mm: outputs in millimetres (default: normalised)")
    cloud = p.add_mutually_exclusive_group()
    cloud.add_argument("--cloud", dest="cloud", action="store_true", default=None,
                       help="require the point cloud (an error when the model has no cloud decoder)")
    cloud.add_argument("--no-cloud", dest="cloud", action="store_false", help="do not write the point cloud")
    p.add_argument("--out", default="predictions", help="output folder; each image gets <out>/<image name>/")


@command("predict", "3D joints (and point cloud) from your own RGB images: joints.json, overlay, 3D plot, .ply")(_predict_args)
def cmd_predict(args: argparse.Namespace) -> int:
    from crossmodal.predict import predict_images

    folders = predict_images(args.ckpt, args.image, args.mask, args.bbox, args.intrinsics, args.hand, args.bone_mm,
                             args.cloud, args.out, args.finder, args.whole_image)
    print(f"wrote {len(folders)} prediction folder{'s' if len(folders) != 1 else ''} under {args.out}")
    return 0


# --------------------------------------------------------------------------- figures

def _figures_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/latest/checkpoints/best.ckpt)")
    p.add_argument("--out", default=None, help="output folder (default: <run folder>/figures)")
    p.add_argument("--samples", type=int, default=4, help="test samples in Figure 3 and the generation figures")
    p.add_argument("--pair", default="0,1", metavar="A,B", help="test indices interpolated in Figure 4")
    p.add_argument("--steps", type=int, default=7, help="interpolation steps in Figure 4 (ends included)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples")
    _add_overrides(p)


@command("figures", "the paper's Figures 3 and 4 and cross-modal generation from a checkpoint's test split")(_figures_args)
def cmd_figures(args: argparse.Namespace) -> int:
    from crossmodal.figures import render_figures

    pair = _int_list(args.pair, "--pair")
    if len(pair) != 2:
        raise CrossmodalError(f"--pair: expected two test indices A,B, got {args.pair!r}")
    for path in render_figures(args.ckpt, args.out, args.samples, (pair[0], pair[1]), args.steps, args.seed,
                               list(args.overrides)):
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- export

def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/latest/checkpoints/best.ckpt)")
    p.add_argument("--format", default="onnx", choices=("onnx", "torchscript", "safetensors"),
                   help="file format; safetensors: the whole model's weights and config, no pickle, to share")
    p.add_argument("--out", default=None,
                   help="output file (default: beside the checkpoint, .onnx / .torchscript.pt / .safetensors)")
    cloud = p.add_mutually_exclusive_group()
    cloud.add_argument("--cloud", dest="cloud", action="store_true", default=None,
                       help="require the cloud output (an error when the model has no cloud decoder)")
    cloud.add_argument("--no-cloud", dest="cloud", action="store_false", help="export the pose output only")
    p.add_argument("--finder", default=None, metavar="CKPT",
                   help="include a hand finder: safetensors bundles it (predict then finds the hand by itself); "
                        "onnx/torchscript export the whole image -> joints graph")
    p.add_argument("--image-size", default="320x320", metavar="WxH",
                   help="with --finder and onnx/torchscript: the image size the graph takes (default 320x320)")


def _image_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (H, W)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        width = height = 0
    if width < 8 or height < 8:
        raise CrossmodalError(f"--image-size: expected WxH in pixels (each >= 8), e.g. 640x480, got {text!r}")
    return height, width


@command("export", "write the RGB -> (pose, cloud) inference graph as ONNX or TorchScript, or the model as "
                   "safetensors, checked against PyTorch")(_export_args)
def cmd_export(args: argparse.Namespace) -> int:
    from crossmodal.export import TOLERANCE, export_checkpoint

    if args.finder:
        from crossmodal.pipeline.export import export_checkpoint_with_finder

        result = export_checkpoint_with_finder(args.ckpt, args.finder, args.format, args.out, args.cloud,
                                               _image_size(args.image_size))
    else:
        result = export_checkpoint(args.ckpt, args.format, args.out, args.cloud)
    size = result.crop_size
    if args.format == "safetensors":
        bundled = " and the hand finder's" if args.finder else ""
        print(f"wrote {result.path}: the model's weights and config{bundled}, no pickle; use it as --ckpt")
    elif args.finder:
        height, width = _image_size(args.image_size)
        print(f"wrote {result.path}: input image (1, 3, {height}, {width}) RGB in [0, 1] and K (1, 3, 3) -> "
              f"{', '.join(result.outputs)}")
    else:
        print(f"wrote {result.path}: input image (B, 3, {size}, {size}) RGB crop in [0, 1] -> {', '.join(result.outputs)}")
    if result.max_difference is None:
        print("note: onnxruntime is not installed; the export was not checked (pip install onnxruntime)")
    elif not result.matches:
        print(f"error: {result.path} differs from PyTorch by {result.max_difference:.3g} (> {TOLERANCE:g})", file=sys.stderr)
        return 1
    else:
        print(f"checked with {result.checked_with}: max |exported - PyTorch| = {result.max_difference:.2g}")
    return 0


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    from crossmodal.pretrain import PretrainSettings

    defaults = PretrainSettings()
    p.add_argument("--out", required=True, help="folder for trunk.pt (rgb_resnet18's pretrained_path) and pretrain.json")
    for name, value in vars(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"default {value}")
    p.add_argument("config", nargs="?", default=None, help="YAML config file (optional)")
    _add_overrides(p)


@command("pretrain", "self-supervised pre-training of the RGB trunk on every training image (equivariant "
         "contrastive, PeCLR): OUT/trunk.pt for rgb_resnet18's pretrained_path")(_pretrain_args)
def cmd_pretrain(args: argparse.Namespace) -> int:
    from crossmodal.config import load_config
    from crossmodal.pretrain import PretrainSettings, pretrain

    config, overrides = _split_config_arg(args)
    settings = PretrainSettings(**{k: getattr(args, k) for k in vars(PretrainSettings())})
    record = pretrain(load_config(config, overrides), settings, Path(args.out))
    print(f"pretrain: {record['frames']} frames, loss {record['loss_first']:.3f} -> {record['loss_last']:.3f} in "
          f"{record['wall_s']:.0f} s; wrote {record['trunk']}")
    return 0


# --------------------------------------------------------------------------- list

@command("list", "list every registered dataset, encoder, decoder, strategy and pose loss")(lambda p: None)
def cmd_list(args: argparse.Namespace) -> int:
    from crossmodal.registry import DATASETS, DECODERS, ENCODERS, POSE_LOSSES, STRATEGIES

    for registry in (DATASETS, ENCODERS, DECODERS, STRATEGIES, POSE_LOSSES):
        print(f"{registry.plural:<12}{', '.join(registry.names()) or '(none)'}")
    return 0


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crossmodal",
        description="crossmodal: cross-modal variational models for 3D hand pose estimation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (help_text, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _quiet_third_party() -> None:
    """Silence third-party chatter that says nothing about the user's run."""
    import os
    import warnings

    import logging

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    os.environ.setdefault("POSSIBLE_USER_WARNINGS", "off")  # Lightning's "consider increasing num_workers" hints
    # Lightning advertises a hosted logger at every Trainer start.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )


def main(argv: list[str] | None = None) -> int:
    _quiet_third_party()
    parser = build_parser()
    # key=value overrides may come after options (`train --x y a=b`), which argparse alone
    # would refuse once the positional list has been consumed: collect them here.
    args, extra = parser.parse_known_args(argv)
    positional = next((name for name in ("overrides", "targets") if hasattr(args, name)), None)
    if extra and (positional is None or not all("=" in e and not e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        getattr(args, positional).extend(extra)
    if args.command is None:
        parser.print_help()
        return 0
    _, _, run = COMMANDS[args.command]
    try:
        return run(args)
    except CrossmodalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
