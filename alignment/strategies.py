"""Imports every strategy module so that it registers in ``STRATEGIES`` (one line per strategy)."""

from alignment import crossmodal_vae, extended, kl_align, poe, regressor  # noqa: F401
