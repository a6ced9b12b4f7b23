"""fit_check: the EPE of a trained model on frames it saw, against the evaluation's own path."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from crossmodal.config import Config
from crossmodal.fit_check import epe, predictions, training_frames_epe
from crossmodal.data.datamodule import build_datamodule
from crossmodal.train import evaluate_checkpoint
from crossmodal.trained import load_trained_module


@pytest.mark.parametrize("strategy", ["poe", "crossmodal"])
def test_fit_check_on_the_test_split_is_the_evaluation(tiny_checkpoints, tmp_path, single_thread, strategy):
    """Its batching and metric, run over the test split, give what `eval` reports (Lightning's
    test loop, the protocol's metric): the training-frame EPE is measured by the same ruler."""
    ckpt = tiny_checkpoints[strategy]
    module = load_trained_module(ckpt).eval()
    cfg = OmegaConf.merge(OmegaConf.structured(Config), module.cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup(None)
    ours = epe(predictions(module, datamodule.datasets["test"], 10**9, batch=3), palm=False)
    reference = evaluate_checkpoint(ckpt, cfg, tmp_path)["epe_mean"]
    assert ours == pytest.approx(float(reference), rel=1e-4)


def test_training_frames_epe_reads_the_first_frames_of_the_training_split(tiny_checkpoints, single_thread):
    ckpt = tiny_checkpoints["crossmodal"]
    module = load_trained_module(ckpt).eval()
    cfg = OmegaConf.merge(OmegaConf.structured(Config), module.cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup(None)
    train = datamodule.datasets["train"]
    first = predictions(module, train, 5)
    assert len(first["pred"]) == 5 and torch.equal(first["pose"][0], train[0]["pose"])
    assert training_frames_epe(ckpt, 5) == pytest.approx(epe(first, palm=False), rel=1e-6)
    # More frames than the split holds: all of them, no error.
    assert len(predictions(module, train, 10**9)["pred"]) == len(train)
    assert type(training_frames_epe(ckpt, 5)) is float  # as the run records store it (JSON)
