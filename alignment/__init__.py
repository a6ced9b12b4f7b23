"""Training strategies, one file each: crossmodal (S1, ``crossmodal_vae.py``), extended (S2),
kl_align (S3), poe (S4) and the plain regressor; ``base.py`` is what they share. Importing this
package registers them in ``crossmodal.registry.STRATEGIES``. The Gaussian maths they use lives
in the core, ``crossmodal.gaussian``, which the encoders use too.
"""

from alignment import crossmodal_vae, extended, kl_align, poe, regressor  # noqa: F401  (registration)
