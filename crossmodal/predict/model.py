"""A pose checkpoint loaded for inference (and the hand finder bundled in it, if any)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.errors import ConfigError


@dataclass
class InferenceModel:
    """A checkpoint's model in eval mode, with what inference needs to know about its training."""

    module: Any  # crossmodal.module.CrossmodalModule
    config: Any  # the checkpoint's resolved config (DictConfig)
    checkpoint: Path
    finder_bundle: dict[str, Any] | None = None  # {"config", "state_dict"} of a finder stored in the same file
    # How sure the keypoint fit's side is (crossmodal.side_weight); 0: no hedge, the better fit's pose.
    side_temperature: float = 0.0

    @property
    def strategy(self) -> Any:
        return self.module.strategy

    @property
    def preprocess(self) -> Any:
        from omegaconf import OmegaConf

        from crossmodal.config import PreprocessConfig

        return PreprocessConfig(**OmegaConf.to_container(self.config.data.preprocess, resolve=True))

    @property
    def crop_size(self) -> int:
        return int(self.config.data.preprocess.crop_size)

    @property
    def has_cloud(self) -> bool:
        return "cloud" in self.strategy.decoders

    @property
    def cloud_points(self) -> int:
        return int(self.strategy.decoders["cloud"].output_shape[0]) if self.has_cloud else 0

    def require_cloud(self, what: str) -> None:
        """A one-line error when ``what`` needs a cloud decoder this checkpoint does not have."""
        if not self.has_cloud:
            decoders = ", ".join(self.strategy.decoders)
            raise ConfigError(
                f"{what}: {self.checkpoint} (strategy {self.config.model.strategy!r}) has no cloud decoder "
                f"(its decoders: {decoders}); use a checkpoint trained with cloud_foldingnet, or leave out the cloud"
            )

    def crops_to_tensor(self, crops: np.ndarray) -> Any:
        """(N, S, S, 3) uint8 crops -> (N, 3, S, S) floats in [0, 1], as the data loader feeds them."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)

    def predict(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """RGB-only inference on uint8 crops: z (the mean of q(z|x)) and every decoder's output."""
        out = self.strategy.predict(self.crops_to_tensor(crops))
        return {key: value.detach().cpu().numpy() for key, value in out.items()}

    @property
    def has_keypoint_stage(self) -> bool:
        return getattr(self.strategy.encoders["image"], "keypoint_stage", None) is not None

    def keypoint_fit(self, crops: np.ndarray) -> np.ndarray:
        """(N,) how sharply the 2D keypoint stage finds a hand in each uint8 crop: the mean over
        the 21 maps of each map's largest probability. A model that saw one side only fits that
        side's hand better than its mirror image, so comparing a crop with its mirror tells the side."""
        import torch

        if not self.has_keypoint_stage:
            raise ConfigError(f"{self.checkpoint}: its RGB encoder has no 2D keypoint stage to tell the side by")
        from encoders.keypoints import keypoint_fit

        with torch.no_grad():
            return keypoint_fit(self.strategy.encoders["image"].keypoint_maps(self.crops_to_tensor(crops))).numpy()

    def decode(self, z: Any) -> dict[str, np.ndarray]:
        """Every decoder's output for latent codes (N, latent_dim)."""
        import torch

        with torch.no_grad():
            z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
            return {key: decoder(z).cpu().numpy() for key, decoder in self.strategy.decoders.items()}


def load_model(path: str | Path) -> InferenceModel:
    """The model of a checkpoint in eval mode; a missing, corrupt or foreign file is a one-line error."""
    from omegaconf import OmegaConf

    from crossmodal.config import Config
    from crossmodal.trained import load_trained

    module, ckpt = load_trained(path)
    module.eval()
    config = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(module.cfg))
    from crossmodal.side_weight import CHECKPOINT_KEY

    return InferenceModel(module, config, Path(path), ckpt.get("finder"), float(ckpt.get(CHECKPOINT_KEY, 0.0)))
