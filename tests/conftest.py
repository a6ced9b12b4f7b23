"""Shared fixtures: a tiny synthetic dataset (generated once per session) and a fast config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from crossmodal.config import load_config

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker a core: a second thread per worker would only contend.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

#: Small but real: every module, the full data path, a few seconds per strategy.
TINY_OVERRIDES = [
    "profile=none",
    "data.synthetic.train=20",
    "data.synthetic.test=6",
    "data.synthetic.seed=11",
    "data.val_fraction=0.2",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.num_points=64",
    "data.preprocess.crop_size=32",
    "data.preprocess.pool_size=128",
    "model.latent_dim=16",
    "model.encoder_options.cloud_respel.widths=[16,32]",
    "model.decoder_options.cloud_foldingnet.grid_size=8",
    "model.decoder_options.cloud_foldingnet.hidden=[64,64]",
    "model.decoder_options.heatmap_dcgan.channels=[32,16,16,8]",
    "model.joint_hidden=32",
    "trainer.progress=false",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> list[str]:
    """Overrides pointing at a tiny synthetic dataset whose caches are already built."""
    from crossmodal.data.datamodule import build_datamodule

    work: Path = tmp_path_factory.mktemp("tiny")
    overrides = TINY_OVERRIDES + [f"data.root={work / 'synthetic'}", f"data.cache_dir={work / 'cache'}"]
    build_datamodule(load_config(None, overrides)).prepare_data()
    return overrides


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for modules of tiny networks: on shared cores two contended threads
    made the same steps ~30x slower (measured while other jobs ran)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _autograd_left_on():
    """A test that switches autograd off globally breaks whichever test its worker runs next."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left autograd switched off (torch.set_grad_enabled(False) outside a context)")


def raises_one_line(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    """The raised error's message is one line and contains every fragment."""
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def run_interpreted(script: str, timeout: float) -> dict:
    """Run a test file as a script under TRITON_INTERPRET=1 in a fresh process; its last
    stdout line is a JSON dict of results. (The interpreter flag is read when triton is
    imported, which may already have happened in this process.)"""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of a tiny S4 (RGB + cloud encoders; pose, heatmap and cloud decoders; the RGB
    encoder with the CPU profile's 2D keypoint stage) and a tiny S1 (RGB encoder, pose decoder
    only), each trained for real for two steps."""
    from crossmodal.train import train

    out = tmp_path_factory.mktemp("tiny_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        checkpoints = {}
        for strategy in ("poe", "crossmodal"):
            extra = ["model.encoder_options.rgb_resnet18.keypoints=true"] if strategy == "poe" else []
            cfg = load_config(None, [*tiny_data, f"model.strategy={strategy}", f"out_dir={out}", f"name={strategy}",
                                     "trainer.max_steps=2", *extra])
            checkpoints[strategy] = train(cfg).best_checkpoint
        return checkpoints
    finally:
        torch.set_num_threads(threads)


#: A finder trained on the tiny synthetic data long enough to find its hands (~480 Adam steps; after the
#: ~150 of 40 epochs it still marked no hand pixel on one machine and its packages, cause not isolated).
#: One look (finder.zoom=0): its second look is tested on this finder by setting zoom on the loaded
#: finder (tests/test_finder_zoom.py), and a finder trained with windows there in its own test. The
#: forearm counts as any background (optim.person_weight=1): the finder against which these tests'
#: expectations of a 16-frame run (a blank image has no hand, two hands give two regions) were set.
TINY_FINDER_OVERRIDES = ["finder.input_size=64", "data.batch_size=4", "optim.max_epochs=120", "data.val_fraction=0.2",
                         "progress=false", "finder.zoom=0", "optim.person_weight=1"]


@pytest.fixture(scope="session")
def tiny_finder(tiny_data, tmp_path_factory) -> Path:
    """A finder run trained for real on the tiny synthetic data: its run folder (runs/<name>/)."""
    from crossmodal.config import FinderRunConfig
    from crossmodal.finder.train import train_finder

    root = next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))
    out = tmp_path_factory.mktemp("tiny_finder_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(None, [f"data.root={root}", f"out_dir={out}", "name=finder", *TINY_FINDER_OVERRIDES],
                          schema=FinderRunConfig)
        return train_finder(cfg).run_dir
    finally:
        torch.set_num_threads(threads)
