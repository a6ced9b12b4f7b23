"""Typed config: YAML + overrides merge, and every bad input is a one-line error naming the key."""

from __future__ import annotations

import pytest
import yaml

from omegaconf import OmegaConf

from crossmodal.config import load_config, save_config
from crossmodal.errors import ConfigError


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("data:\n  batch_size: 8\n  num_points: 128\n")
    child = tmp_path / "child.yaml"
    child.write_text("defaults: [base.yaml]\nseed: 3\ndata:\n  batch_size: 16\n")
    cfg = load_config(str(child), ["data.preprocess.crop_size=96"])
    assert cfg.seed == 3
    assert cfg.data.batch_size == 16  # child beats base
    assert cfg.data.num_points == 128  # from base
    assert cfg.data.preprocess.crop_size == 96  # override beats files
    assert cfg.data.preprocess.pool_size == 1024  # schema default kept


def test_override_converts_types():
    cfg = load_config(None, ["data.labeled_fraction=0.25", "data.preprocess.view_correction=false", "data.preprocess.orient=false"])
    assert cfg.data.labeled_fraction == 0.25
    assert cfg.data.preprocess.view_correction is False


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.batch_sise=3"], "unknown config key 'data.batch_sise'; valid keys here: augment, batch_size"),
        (["data.batch_size=abc"], "config key 'data.batch_size'"),
        (["data.dataset=imagenet"], "data.dataset: unknown dataset 'imagenet'; registered datasets: rhd, stb, synthetic"),
        (["data.labeled_fraction=0"], "data.labeled_fraction must be in (0, 1]"),
        (["profile=cpu", "data.preprocess.view_correction=false"], "add data.preprocess.orient=false"),
        (["data.labeled_fraction=1.5"], "data.labeled_fraction must be in (0, 1]"),
        (["data.num_points=2048"], "data.num_points (2048) cannot exceed data.preprocess.pool_size (1024)"),
        (["batch_size"], "override 'batch_size' is not of the form key=value"),
        (["optim.schedule=step"], "optim.schedule: unknown schedule 'step'; choices: plateau, cosine"),
        (["optim.warmup_fraction=1"], "optim.warmup_fraction must be in [0, 1)"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("data:\n  preprocess:\n    crop_sise: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'data.preprocess.crop_sise'.*crop_size"):
        load_config(str(typo))


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(None, ["seed=7", "data.batch_size=4"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert yaml.safe_load(out.read_text())["seed"] == 7
    again = load_config(str(out))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temporary file left


def test_cpu_profile_is_made_for_the_budget_and_gpu_profile_keeps_the_paper():
    cpu = load_config(None, ["profile=cpu"])
    assert cpu.model.encoder_options.rgb_resnet18.keypoints is True
    assert cpu.optim.schedule == "cosine" and cpu.trainer.precision == "bf16-mixed"
    # From the learning study (benchmarks/results/learning.md): a linear pose decoder, a peak lr of 2e-3,
    assert list(cpu.model.decoder_options.pose_mlp.hidden) == [] and cpu.optim.lr == 2e-3
    # one canonical hand, no batch augmentation, 8000 frames seen 7 times.
    assert cpu.data.preprocess.orient and cpu.data.preprocess.mirror_left and not cpu.data.augment.enabled
    assert cpu.data.synthetic.train == 8000 and cpu.trainer.max_epochs == 7
    # EMD pairs the decoder's points one to one with the drawn cloud: the two sizes agree.
    assert cpu.model.decoder_options.cloud_foldingnet.grid_size ** 2 == cpu.data.num_points
    # The DC-GAN decoder's output side (4 * 2**len(channels)) is the heatmaps' size.
    assert 4 * 2 ** len(cpu.model.decoder_options.heatmap_dcgan.channels) == cpu.data.preprocess.heatmap_size
    gpu = load_config(None, ["profile=gpu"])
    assert gpu.optim.schedule == "plateau" and gpu.optim.lr == 1e-4
    assert "rgb_resnet18" not in gpu.model.encoder_options and gpu.data.num_points == 256
    assert "pose_mlp" not in gpu.model.decoder_options  # the paper's 4 x 128 MLP
    assert not gpu.data.preprocess.orient and not gpu.data.preprocess.mirror_left and gpu.data.augment.enabled


def test_cpu_long_profile_is_the_cpu_profile_with_more_frames_and_steps():
    """cpu-long builds on cpu (``defaults`` in a profile): only the data, its folders and the length differ."""
    from omegaconf import OmegaConf

    cpu = OmegaConf.to_container(load_config(None, ["profile=cpu"]))
    long = OmegaConf.to_container(load_config(None, ["profile=cpu-long"]))
    def two_levels(cfg: dict) -> dict:  # "data.synthetic" is one entry, compared whole
        flat = {}
        for key, value in cfg.items():
            flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
        return flat

    a, b = two_levels(cpu), two_levels(long)
    assert {k for k in a if a[k] != b[k]} == {"profile", "data.root", "data.cache_dir", "data.synthetic",
                                              "trainer.max_epochs", "trainer.val_check_interval"}
    # Its own folders: frames already in a folder are used as they are, and a cache is keyed by its preprocessing.
    assert long["data"]["root"] != cpu["data"]["root"] and long["data"]["cache_dir"] != cpu["data"]["cache_dir"]
    assert long["data"]["synthetic"]["train"] == 32000 and long["trainer"]["max_epochs"] == 6
