"""The GPU check's parts, one job a module; ``benchmarks/gpu_check.py`` is the command that runs them.

- plan: the sizes of a run (FULL on a GPU, SMOKE_PLAN on CPU) and the short run's overrides;
- common: the time budget, timing and GPU-memory helpers;
- kernel_checks: the Triton kernels against the CPU reference, and their timings;
- steps: each strategy's training step timed, and the largest batch that fits;
- short_run: S4 through the Lightning trainer on a carried cache (and ``--prepare`` of that cache);
- report: the Markdown report and its targets.
"""
