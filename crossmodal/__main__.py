"""``python -m crossmodal <command>``: the single entry point (see ``crossmodal.cli``)."""

from crossmodal.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
