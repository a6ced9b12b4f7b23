"""Experiments: one folder per table or figure of the paper, one YAML per row, one command.

    python -m crossmodal experiment experiments/table1 [--seeds 0,1] [--rows s1_r_p,...] [key=value ...]

An experiment folder holds ``experiment.yaml`` (title, seeds, rows: label, config file,
extra overrides, the paper's number) and the rows' config files, which are ordinary
training configs (``python -m crossmodal train experiments/table1/s4_rc_chp.yaml`` runs
one row alone). ``key=value`` on the command line applies to every row and has the last
word over the rows' own settings, e.g. ``profile=cpu`` or a shorter ``trainer.max_epochs``.

Every (row, seed) trains in ``<out>/<hash of its resolved config>/``. A run whose
``run.json`` exists is finished and is reused, so a second invocation resumes where the
first stopped (an interrupted run restarts from its last checkpoint), and identical rows
of different experiments (Table 1's S4 is Fig. 8's 100 % row) train once. Each finished
run is also recorded in the repository, ``experiments/results/runs/<hash>.json`` (its
metrics and curves): ``runs/`` does not survive a change of machine, and a campaign of many
CPU hours spans machines, so a recorded run counts as finished without its folder. A row that
fails is recorded with its error and the others go on. After every row the results are
rewritten (atomically) to ``experiments/results/<name>.md`` (the paper-style table),
``<name>.csv`` (one line per row and seed), ``<name>.json``, ``<name>_pck.png`` and
``<name>_curves.png`` (each row's validation curve). ``--plan`` lists the runs left to train
(``plan.py``).
"""

from crossmodal.experiment.manifest import MANIFEST, Experiment, Row, config_key, load_experiment, row_config
from crossmodal.experiment.records import FINISHED, Outcome, finished_outcome, write_record
from crossmodal.experiment.runner import run_experiment, run_one
from crossmodal.experiment.tables import summarise, write_results

__all__ = ["FINISHED", "MANIFEST", "Experiment", "Outcome", "Row", "config_key", "finished_outcome", "load_experiment",
           "row_config", "run_experiment", "run_one", "summarise", "write_record", "write_results"]
