"""The sizes of one GPU check: FULL on a GPU, SMOKE_PLAN at tiny sizes on CPU."""

from __future__ import annotations

from dataclasses import dataclass

#: The short real run: S4 on the CPU profile's recipe for a short budget (64 px crops, 2D keypoint
#: stage, cosine schedule, bf16). ``--prepare`` builds the cache with these same overrides, so the
#: preprocessing hash of the carried cache matches the run's.
RUN = ["profile=cpu", "model.strategy=poe", "trainer.precision=bf16-mixed",
       "data.synthetic.train=600", "data.synthetic.test=100", "data.synthetic.seed=7"]
#: Smoke: every module and the data at a few channels, pixels and points (applied on top of RUN
#: for the short run and of the GPU profile for the step timings).
TINY = ("data.synthetic.train=20 data.synthetic.test=6 data.batch_size=4 data.num_points=64 "
        "data.preprocess.crop_size=32 data.preprocess.pool_size=128 data.preprocess.heatmap_size=32 "
        "data.preprocess.heatmap_sigma=1.0 model.latent_dim=16 model.joint_hidden=32 "
        "model.encoder_options.cloud_respel.widths=[16,32] model.decoder_options.heatmap_dcgan.channels=[16,8,8] "
        "model.decoder_options.cloud_foldingnet.grid_size=8 model.decoder_options.cloud_foldingnet.hidden=[32,32]").split()
LABELS = {"crossmodal": "S1", "extended": "S2", "kl_align": "S3", "poe": "S4", "regressor": "regressor"}
PRECISIONS = ("bf16-mixed", "32-true")


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: FULL on a GPU, SMOKE_PLAN on CPU."""

    device: str
    kernel_batch: int
    kernel_sizes: tuple[int, ...]
    kernel_warmup: int  # on a GPU one call compiles the Triton kernels; the interpreter needs none
    kernel_repeats: int
    check_shape: tuple[int, int, int]  # B, N, M of the Chamfer reference check
    check_emd: int  # N = M of the EMD reference check
    exact_samples: int  # samples solved exactly by scipy at N > 1024 (all of them below)
    step_overrides: tuple[str, ...]  # on top of profile=gpu
    step_warmup: int
    step_repeats: int
    batch_cap: int  # largest batch the memory search tries
    run_overrides: tuple[str, ...]
    run_steps: int
    run_workers: int
    target_s: float  # at most this long timing one case, after its warm-up
    reserve_s: float  # the kernel and step timings stop when less is left: the short run's time
    tail_s: float  # the short run stops when less is left: the largest-batch search's time
    emd_cap_s: float  # EMD is not timed at a size whose estimated cost is above this


FULL = Plan("cuda", 32, (256, 1024, 2048), 1, 10, (4, 1000, 1500), 1000, 8, (), 3, 10, 16384, tuple(RUN), 300, 4, 3.0, 150.0, 60.0, 40.0)
# The interpreted auction costs ~1 s per solve at N = 16 on a free core: EMD stays at N <= 24.
SMOKE_PLAN = Plan("cpu", 2, (16, 24), 0, 1, (2, 40, 70), 20, 2, tuple(TINY), 1, 2, 16, (*RUN, *TINY), 8, 0, 1.0, 60.0, 30.0, 120.0)
