"""Strategies trained for real on tiny synthetic data through the Lightning module and CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossmodal.cli import main
from crossmodal.config import load_config
from crossmodal.module import CrossmodalModule, beta_at
from crossmodal.data.datamodule import build_datamodule
from crossmodal.runlog import validation_curve

STRATEGIES = ["crossmodal", "extended", "kl_align", "poe", "regressor"]


def first_batch(cfg, labeled: bool | None = None) -> dict[str, torch.Tensor]:
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = dm.finish_batch(next(iter(dm.train_dataloader())), augment=False)
    if labeled is not None:
        batch["labeled"] = torch.full_like(batch["labeled"], labeled)
    return batch


def build(tiny_data, *overrides: str):
    from omegaconf import OmegaConf

    cfg = load_config(None, [*tiny_data, *overrides])
    return cfg, CrossmodalModule(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_loss_falls(tiny_data, strategy):
    torch.manual_seed(0)
    cfg, module = build(tiny_data, f"model.strategy={strategy}")
    batch = first_batch(cfg, labeled=True)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    losses = []
    module.train()
    for _ in range(25):
        opt.zero_grad()
        terms = module.strategy.losses(batch, beta=1e-3)
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (strategy, losses)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_inference_needs_rgb_only(tiny_data, strategy):
    cfg, module = build(tiny_data, f"model.strategy={strategy}")
    module.eval()
    batch = first_batch(cfg)
    rgb_only = {k: batch[k] for k in ("image", "pose", "scale", "visible")}  # no cloud, no heatmaps
    module.validation_step(rgb_only, 0)
    result = module.val_metrics.compute()
    assert torch.isfinite(result["epe_mean"])
    out = module.strategy.predict(batch["image"])
    assert out["pose"].shape == batch["pose"].shape
    again = module.strategy.predict(batch["image"])
    assert torch.equal(out["pose"], again["pose"])  # the mean of q(z|x): deterministic


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_posterior_keys_are_the_encoders_whose_own_heads_the_loss_trains(tiny_data, strategy):
    """What figures and diagnostics may encode alone: an encoder whose mu head gets no gradient
    (S3's cloud encoder, a backbone of the joint encoder) gives untrained codes."""
    cfg, module = build(tiny_data, f"model.strategy={strategy}")
    module.strategy.losses(first_batch(cfg, labeled=True), beta=1e-3)["loss"].backward()
    trained = tuple(key for key, enc in module.strategy.encoders.items()
                    if enc.mu_head.weight.grad is not None and torch.count_nonzero(enc.mu_head.weight.grad) > 0)
    assert module.strategy.posterior_keys == trained
    assert {"crossmodal": ("image",), "kl_align": ("image",), "poe": ("image", "cloud")}.get(strategy, trained) == trained


@pytest.mark.parametrize("strategy", ["extended", "kl_align", "poe"])
def test_unlabelled_batch_gives_no_pose_gradient(tiny_data, strategy):
    cfg, module = build(tiny_data, f"model.strategy={strategy}")
    batch = first_batch(cfg, labeled=False)
    terms = module.strategy.losses(batch, beta=1e-3)
    terms["loss"].backward()
    for target in ("pose", "heatmaps"):
        for name, p in module.strategy.decoders[target].named_parameters():
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, (target, name)
    cloud_grads = [p.grad for p in module.strategy.decoders["cloud"].parameters()]
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in cloud_grads)  # clouds still train
    assert all(v.item() == 0 for k, v in terms.items() if k.endswith(("/pose", "/heatmaps")))


def test_masked_samples_get_no_gradient_through_batch_norm(tiny_data):
    """Half the batch unlabelled: the heatmap decoder (batch norm) must neither pass those samples
    gradient nor let them change the labelled samples' loss."""
    from crossmodal.gaussian import DiagonalGaussian

    cfg, module = build(tiny_data, "model.strategy=extended", "model.decoders=[pose_mlp,heatmap_dcgan]")
    strategy = module.strategy.train()
    batch = first_batch(cfg)
    labeled = torch.arange(len(batch["labeled"])) % 2 == 0
    batch["labeled"] = labeled
    mu = torch.randn(len(labeled), cfg.model.latent_dim, requires_grad=True)
    q = DiagonalGaussian(mu, torch.full_like(mu, -30.0))  # sigma ~ 0: z = mu
    terms = strategy.reconstruction(q, batch, "image", torch.ones_like(labeled))
    terms["image/heatmaps"].backward()
    assert torch.count_nonzero(mu.grad[~labeled]) == 0
    assert torch.count_nonzero(mu.grad[labeled]) > 0
    alone = {k: v[labeled] for k, v in batch.items()}  # the labelled samples as a batch of their own
    expected = strategy.reconstruction(DiagonalGaussian(mu[labeled], q.logvar[labeled]), alone, "image",
                                       torch.ones(int(labeled.sum()), dtype=torch.bool))
    torch.testing.assert_close(terms["image/heatmaps"], expected["image/heatmaps"])


def test_one_decode_for_several_latents_equals_separate_decodes(tiny_data):
    """S3/S4 stack their latents into one decode per decoder; without batch norm in the decoders
    that is exactly the separate calls, masks included."""
    from crossmodal.gaussian import DiagonalGaussian

    cfg, module = build(tiny_data, "model.strategy=poe", "model.decoders=[pose_mlp,cloud_foldingnet]")
    strategy = module.strategy.train()
    batch = first_batch(cfg)
    n = len(batch["labeled"])
    batch["labeled"] = torch.arange(n) % 3 != 0
    batch["has_cloud"] = torch.arange(n) % 2 == 0
    torch.manual_seed(1)
    qs = [(name, DiagonalGaussian(torch.randn(n, cfg.model.latent_dim), torch.full((n, cfg.model.latent_dim), -30.0)), mask)
          for name, mask in (("image", torch.ones(n, dtype=torch.bool)), ("cloud", batch["has_cloud"]), ("joint", torch.ones(n, dtype=torch.bool)))]
    together = strategy.reconstructions(qs, batch)
    apart = {}
    for name, q, mask in qs:
        apart.update(strategy.reconstruction(q, batch, name, mask))
    assert together.keys() == apart.keys()
    for key in apart:
        torch.testing.assert_close(together[key], apart[key], rtol=1e-4, atol=1e-5)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from crossmodal.module import cosine_with_warmup

    factor = cosine_with_warmup(100, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0)
    assert all(factor(i) >= factor(i + 1) for i in range(10, 100))


def test_beta_schedule_log_linear():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"beta_start": 1e-5, "beta_end": 1e-3, "beta_anneal_fraction": 0.5})
    assert beta_at(0, 100, cfg) == pytest.approx(1e-5)
    assert beta_at(25, 100, cfg) == pytest.approx(1e-4)
    assert beta_at(50, 100, cfg) == pytest.approx(1e-3)
    assert beta_at(99, 100, cfg) == pytest.approx(1e-3)


def test_failed_data_check_leaves_no_run_folder_and_runs_latest_alone(tmp_path, capsys):
    """A missing dataset is a one-line error before anything is written: no empty run folder, and
    runs/latest still points at the last good run, so `make eval` keeps evaluating it."""
    from conftest import TINY_OVERRIDES

    good = tmp_path / "good"
    (good / "checkpoints").mkdir(parents=True)
    (good / "checkpoints" / "best.ckpt").write_bytes(b"stand-in")
    (tmp_path / "latest").symlink_to("good")
    missing = tmp_path / "nonexistent"
    code = main(["train", *TINY_OVERRIDES, "data.dataset=rhd", f"data.root={missing}",
                 f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path}", "name=bad"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"RHD root folder not found: {missing}" in err
    assert not (tmp_path / "bad").exists()
    assert (tmp_path / "latest").resolve() == good.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "latest"]


def test_train_eval_and_resume_at_same_step(tiny_data, tmp_path, capsys):
    # 16 training frames / batch 4 = 4 steps per epoch; checkpoints are written at epoch ends.
    common = [*tiny_data, f"out_dir={tmp_path}", "name=run", "model.strategy=poe"]
    assert main(["train", *common, "trainer.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "EPE mean" in out
    assert "[run] step 4/4, epoch 0: val EPE " in out  # no progress bar: a line per validation instead
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.json", "pck.png", "qualitative.png", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*")) and (run / "csv" / "metrics.csv").is_file()
    assert (tmp_path / "latest").resolve() == run.resolve()
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 4
    assert main(["train", *common, "trainer.max_epochs=2", "resume=true"]) == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 8 and resumed["epoch"] == 1
    # The training clock went on from the first part's reading (crossmodal.clock; the runner's
    # resume test plants a reading to check the sum).
    assert 0.0 < first["callbacks"]["TrainingClock"]["fit_s"] < resumed["callbacks"]["TrainingClock"]["fit_s"]
    adam_steps = {int(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert adam_steps == {8}  # the optimizer state continued, not restarted
    assert first["lr_schedulers"][0]["last_epoch"] == 1  # one validation, one plateau step
    assert resumed["lr_schedulers"][0]["last_epoch"] == 2  # the plateau schedule continued too
    # Lightning's CSV logger would delete the first epoch's log on resume; it was set aside instead.
    assert (run / "csv" / "metrics.part0.csv").is_file()
    assert len(validation_curve(run)) == 2
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert "EPE mean" in capsys.readouterr().out


def test_cpu_profile_training_features_run_end_to_end(tiny_data, tmp_path, capsys):
    """The CPU profile's keypoint stage, linear pose decoder, cosine schedule and bf16 autocast, at tiny size: training
    logs the 2D term and wall time, the schedule ends at lr 0, and evaluation runs in fp32."""
    import csv

    common = [*tiny_data, f"out_dir={tmp_path}", "name=run", "model.strategy=poe", "trainer.max_epochs=2",
              "model.encoder_options.rgb_resnet18.keypoints=true", "model.encoder_options.rgb_resnet18.keypoint_ce=1.0",
              "model.decoder_options.pose_mlp.hidden=[]",
              "optim.schedule=cosine", "optim.warmup_fraction=0.25", "trainer.precision=bf16-mixed"]
    assert main(["train", *common]) == 0
    assert "EPE mean" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    assert any(r.get("train/image/keypoints2d") for r in rows)
    elapsed = [float(r["val/elapsed_s"]) for r in rows if r.get("val/elapsed_s")]
    assert len(elapsed) == 2 and 0 < elapsed[0] < elapsed[1]
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["lr_schedulers"][0]["last_epoch"] == 8  # stepped once per step, not per validation
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    pose_decoder = sorted(k for k in last["state_dict"] if k.startswith("strategy.decoders.pose."))
    assert pose_decoder == ["strategy.decoders.pose.out.bias", "strategy.decoders.pose.out.weight"]  # one linear map


def test_weak_supervision_with_a_fixed_labelled_share_trains(tiny_data, tmp_path):
    """data.labeled_per_batch through the trainer: S4 on 25% labels, two of each four frames
    labelled, for an epoch as long as a uniform loader's."""
    assert main(["train", *tiny_data, f"out_dir={tmp_path}", "name=weak", "model.strategy=poe", "trainer.max_epochs=1",
                 "data.labeled_fraction=0.25", "data.labeled_per_batch=2"]) == 0
    last = torch.load(tmp_path / "weak" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4  # ceil(16 training frames / batch 4)


def test_nonfinite_loss_stops_with_step_term_and_checkpoint(tiny_data, tmp_path, capsys):
    code = main(["train", *tiny_data, f"out_dir={tmp_path}", "name=nan", "model.strategy=extended",
                 "model.lambda_heat=inf", "trainer.max_steps=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "non-finite loss at step 0: term 'image/heatmaps' = inf (batch index 0)" in err
    assert (tmp_path / "nan" / "checkpoints" / "nonfinite-step0.ckpt").is_file()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.strategy=s5"], "model.strategy: unknown strategy 's5'; registered strategies: crossmodal, extended, kl_align, poe, regressor"),
        (["model.strategy=crossmodal", "model.decoders=[pose_mlp,heatmap_dcgan]"], "strategy 'crossmodal' cannot use decoder 'heatmap_dcgan'"),
        (["data.labeled_fraction=0"], "data.labeled_fraction must be in (0, 1], got 0"),
        (["data.labeled_fraction=1.01"], "data.labeled_fraction must be in (0, 1], got 1.01"),
        (["data.labeled_per_batch=2"], "data.labeled_per_batch mixes labelled and unlabelled frames in each batch: it "
                                        "needs data.labeled_fraction < 1 and data.drop_unlabeled=false"),
    ],
)
def test_train_errors_are_one_line(tiny_data, tmp_path, capsys, overrides, expected):
    assert main(["train", *tiny_data, f"out_dir={tmp_path}", *overrides]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_checkpoint_from_another_strategy_is_refused(tiny_data, tmp_path, capsys):
    assert main(["train", *tiny_data, f"out_dir={tmp_path}", "name=s1", "model.strategy=crossmodal", "trainer.max_steps=1"]) == 0
    ckpt = tmp_path / "s1" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(ckpt), "model.strategy=poe"]) == 2
    assert f"{ckpt} was trained with strategy 'crossmodal', not 'poe'" in capsys.readouterr().err
    assert main(["train", *tiny_data, f"out_dir={tmp_path}", "name=s1", "model.strategy=crossmodal",
                 "model.latent_dim=8", "resume=true"]) == 2
    assert "model.latent_dim=16, this config has model.latent_dim=8" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", "--ckpt", str(bad)]) == 2
    assert f"{bad}: not a readable checkpoint" in capsys.readouterr().err


def test_eval_does_not_need_the_imagenet_file_that_initialised_training(tiny_data, tmp_path, capsys):
    from crossmodal.registry import ENCODERS

    imagenet = tmp_path / "resnet18-imagenet.pth"
    torch.save(ENCODERS.build("rgb_resnet18").trunk.state_dict(), imagenet)
    assert main(["train", *tiny_data, f"out_dir={tmp_path}", "name=init", "model.strategy=crossmodal",
                 f"model.encoder_options.rgb_resnet18.pretrained_path={imagenet}", "trainer.max_steps=1"]) == 0
    imagenet.unlink()  # e.g. the checkpoint was copied to another machine
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(tmp_path / "init" / "checkpoints" / "last.ckpt")]) == 0
    assert "EPE mean" in capsys.readouterr().out


def test_ddp_two_cpu_processes(tiny_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "crossmodal", "train", *tiny_data, f"out_dir={tmp_path}", "name=ddp",
         "model.strategy=poe", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
         "trainer.max_steps=2"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert "EPE mean" in result.stdout


def test_last_checkpoint_is_the_last_epoch_when_validation_stops_improving(tmp_path):
    """Lightning 2.6's save_last refreshes last.ckpt only when best.ckpt is written: a run whose
    validation got worse would leave last.ckpt (what resume and the experiment runner read) at an
    earlier epoch. The trainer's checkpoints must keep last.ckpt at the last epoch."""
    import lightning as L

    from crossmodal.train import build_trainer

    class Worsening(L.LightningModule):  # validation EPE 1, 2, 3: only epoch 0 is the best
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch[0]).square().mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/epe_mean", float(self.current_epoch + 1))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = lambda: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)  # noqa: E731
    cfg = load_config(None, ["trainer.max_epochs=3", "trainer.progress=false", "trainer.accelerator=cpu", "trainer.devices=1"])
    trainer = build_trainer(cfg, tmp_path, with_loggers=False)
    trainer.fit(Worsening(), loader(), loader())
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert best["global_step"] == 2 and last["global_step"] == 6
    assert last["epoch"] == 2
