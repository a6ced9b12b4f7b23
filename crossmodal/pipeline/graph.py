"""Image -> joints in one graph (ONNX / TorchScript): area downscale, finder, hand box, the
training crop as a homography sample, RGB encoder, decoders, joints back in the image's camera.

With a finder that looks twice (``finder.zoom``), its second look is in the graph too
(``crossmodal.finder.zoom``: the window is cut and mapped back by matrix products); with
``finder.flip_average``, each look is averaged with the mirror image's (``crossmodal.finder.flip``).

Inputs (one image at a time): ``image`` float32 (1, 3, H, W) RGB in [0, 1] at the size fixed at export, ``K`` (1, 3, 3)
intrinsics (predict's default camera: focal = image width, principal point at the centre).
Outputs: ``pose`` (B, 21, 3) root-relative, divided by the bone 12->11, in the image's camera;
``cloud`` likewise (when exported); ``box`` (B, 4) the hand box's pixel edges; ``right`` (B,)
the finder's right-hand share of the hand probability; ``found`` (B,) 1 when a hand was found (else
the whole image was cropped, where predict would skip the image). A model that saw one side only
and has a 2D keypoint stage takes the side as predict does, by its own keypoint fit: the hand is
encoded as is and mirrored in one batch, the sharper fit wins, and ``fit_right`` (B,) is 1 where
that made it a right hand; without the stage the finder's side decides.

The crop follows ``crossmodal.data.preprocess.crop_rgb``: the same box -> crop-square rule, view
correction and crop intrinsics. One step differs: predict shrinks a large crop with an integer
box filter before bilinear sampling (a data-dependent kernel a graph cannot hold); the graph
averages 2x2 bilinear samples per crop pixel instead, so its joints differ slightly from
predict's (tests/test_export_finder.py measures by how much).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossmodal.data.geometry import ISOTROPIC
from crossmodal.finder.locate import UPRIGHT_STRIDE, locate_hand
from crossmodal.finder.zoom import look_twice
from crossmodal.finder.resize import area_matrix, working_size

#: Bilinear samples per crop-pixel side. 2 keeps the graph's joints as close to predict's as 4 did
#: (a mean joint difference of 0.118 against 0.119 bone units on 39 evaluation images, where the
#: two cross only when the keypoint fit's side is a near tie) for a quarter of the sampling.
SUPERSAMPLES = 2


def inverse_intrinsics(K: Tensor) -> Tensor:
    """Closed-form inverse of upper-triangular intrinsics (B, 3, 3): ONNX has no matrix inverse."""
    fx, s, cx, fy, cy = K[:, 0, 0], K[:, 0, 1], K[:, 0, 2], K[:, 1, 1], K[:, 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([1 / fx, -s / (fx * fy), (s * cy - cx * fy) / (fx * fy)], -1),
            torch.stack([zero, 1 / fy, -cy / fy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, 1)


def rotation_to_optical_axis(ray: Tensor) -> Tensor:
    """Batched ``geometry.rotation_to_optical_axis``: the smallest rotation taking ``ray`` onto +z."""
    d = ray / ray.norm(dim=-1, keepdim=True)
    axis = torch.stack([d[:, 1], -d[:, 0], torch.zeros_like(d[:, 0])], -1)  # d x z
    sin, cos = axis.norm(dim=-1), d[:, 2]
    k = axis / sin.clamp_min(1e-12)[:, None]
    zero = torch.zeros_like(sin)
    cross = torch.stack([torch.stack([zero, -k[:, 2], k[:, 1]], -1), torch.stack([k[:, 2], zero, -k[:, 0]], -1),
                         torch.stack([-k[:, 1], k[:, 0], zero], -1)], 1)
    eye = torch.eye(3, dtype=ray.dtype, device=ray.device).expand_as(cross)
    R = eye + sin[:, None, None] * cross + (1 - cos)[:, None, None] * cross @ cross
    return torch.where((sin < 1e-12)[:, None, None], eye, R)


def mirror_intrinsics(K: Tensor, width: int) -> Tensor:
    """Batched ``geometry.mirror_intrinsics``: the camera of the left-right flipped image."""
    sign = torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], dtype=K.dtype)
    shift = torch.zeros(3, 3, dtype=K.dtype)
    shift[0, 2] = width - 1
    return K * sign + shift


def upright_points(hand: Tensor) -> tuple[Tensor, Tensor]:
    """The hand pixels the crop is turned by (``locate.upright_pixels``: every ``UPRIGHT_STRIDE``-th
    row and column): their (u, v) (1, N, 2) and 0/1 weights (B, N) from ``hand`` (B, H, W)."""
    sub = hand[:, ::UPRIGHT_STRIDE, ::UPRIGHT_STRIDE]
    B, rows, cols = sub.shape
    v, u = torch.meshgrid(torch.arange(rows, dtype=torch.float32) * UPRIGHT_STRIDE,
                          torch.arange(cols, dtype=torch.float32) * UPRIGHT_STRIDE, indexing="ij")
    return torch.stack([u, v], -1).reshape(1, -1, 2), sub.reshape(B, -1)


def roll_upright(points: Tensor, weights: Tensor, H: Tensor) -> Tensor:
    """Batched ``geometry.roll_upright`` of the hand pixels ``points`` (B or 1, N, 2) whose ``weights``
    (B, N) are 1 (0: not a hand pixel), carried into the crop by the homography ``H`` (B, 3, 3); the
    identity where no pixel is weighted or the set is isotropic (``geometry.ISOTROPIC``)."""
    B = len(weights)
    points = torch.cat([points.to(H.dtype), torch.ones_like(points[..., :1], dtype=H.dtype)], -1) @ H.transpose(1, 2)
    uv = points[..., :2] / points[..., 2:]  # (B, N, 2) crop pixels
    w = weights.reshape(B, -1).to(H.dtype)
    count = w.sum(1)
    mean = (uv * w[..., None]).sum(1) / count.clamp_min(1.0)[:, None]
    d = (uv - mean[:, None]) * (w[..., None] > 0)
    a, b, c = [(x * y).sum(1) / count.clamp_min(1.0) for x, y in ((d[..., 0], d[..., 0]), (d[..., 0], d[..., 1]), (d[..., 1], d[..., 1]))]
    theta = 0.5 * torch.atan2(2 * b, a - c)
    axis = torch.stack([torch.cos(theta), torch.sin(theta)], -1)
    along = (d * axis[:, None]).sum(-1)
    across2 = ((d * torch.stack([-axis[:, 1], axis[:, 0]], -1)[:, None]).sum(-1)) ** 2
    ahead = (along >= 0).to(H.dtype) * w
    behind = (along < 0).to(H.dtype) * w
    width_ahead = (across2 * ahead).sum(1) / ahead.sum(1).clamp_min(1.0)
    width_behind = (across2 * behind).sum(1) / behind.sum(1).clamp_min(1.0)
    axis = torch.where((width_ahead < width_behind)[:, None], -axis, axis)
    zero, one = torch.zeros_like(theta), torch.ones_like(theta)
    Rz = torch.stack([torch.stack([-axis[:, 1], axis[:, 0], zero], -1), torch.stack([-axis[:, 0], -axis[:, 1], zero], -1),
                      torch.stack([zero, zero, one], -1)], 1)
    eye = torch.eye(3, dtype=H.dtype).expand_as(Rz)
    isotropic = torch.sqrt((a - c) ** 2 + 4 * b**2) <= ISOTROPIC * (a + c)
    return torch.where(((count < 2) | isotropic)[:, None, None], eye, Rz)


class ImageToJoints(nn.Module):
    def __init__(self, finder: Any, model: Any, image_size: tuple[int, int], with_cloud: bool) -> None:
        super().__init__()
        height, width = image_size
        small = working_size(height, width, finder.input_size)
        self.register_buffer("rows", torch.from_numpy(area_matrix(height, small[0])).float())
        self.register_buffer("cols", torch.from_numpy(area_matrix(width, small[1])).float())
        self.finder = finder.logits_of
        self.min_score, self.min_pixels = float(finder.config["finder"]["min_score"]), float(finder.config["finder"]["min_pixels"])
        self.zoom, self.finder_size = finder.zoom, finder.input_size
        self.encoder = model.strategy.encoders["image"]
        self.pose_decoder = model.strategy.decoders["pose"]
        self.cloud_decoder = model.strategy.decoders["cloud"] if with_cloud else None
        pre = model.preprocess
        self.crop_size, self.margin, self.view_correction = int(pre.crop_size), float(pre.crop_margin), bool(pre.view_correction)
        self.orient = bool(pre.orient)
        # A model that saw one side only gets the other side mirrored, as predict does
        # (crossmodal.predict.side.plan_hand): "right" / "left" is the side it saw, "" both.
        from crossmodal.data.sides import training_hands

        sides = training_hands(str(model.config.data.dataset), bool(pre.mirror_left)) or ("left", "right")
        self.only_side = sides[0] if len(sides) == 1 else ""
        self.by_fit = bool(self.only_side) and getattr(self.encoder, "keypoint_stage", None) is not None
        # With the fit's side, both sides' poses are weighted by their probability (crossmodal.side_weight).
        self.side_temperature = float(getattr(model, "side_temperature", 0.0))
        self.image_size = (height, width)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (("pose",) + (("cloud",) if self.cloud_decoder is not None else ()) + ("box", "right", "found")
                + (("fit_right",) if self.by_fit else ()))

    def crop(self, image: Tensor, K: Tensor, box: Tensor, hand: tuple[Tensor, Tensor] | None = None,
             mirrored: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, 3, S, S) crops of the boxes, and R (corrected = R @ camera); with ``preprocess.orient``
        the camera is rolled by the hand pixels ``hand`` (``upright_points``), as ``crop_rgb`` does.
        Where ``mirrored`` (B,), ``K``, ``box`` and ``hand`` are the flipped image's (``_mirrored``)
        and ``image`` is not flipped: its crop samples the image at u -> W - 1 - u, which is the
        flipped image's sample without a flipped copy of the image."""
        S, (height, width) = self.crop_size, self.image_size
        centre = (box[:, :2] + box[:, 2:]) / 2
        side = ((box[:, 2:] - box[:, :2]).amax(dim=1) * self.margin).clamp_min(1.0)
        scale = S / side
        one, zero = torch.ones_like(side), torch.zeros_like(side)
        if self.view_correction:
            ray = (inverse_intrinsics(K) @ torch.cat([centre, one[:, None]], 1)[:, :, None])[:, :, 0]
            R = rotation_to_optical_axis(ray)
            c = torch.full_like(side, (S - 1) / 2)
            K_crop = torch.stack([torch.stack([K[:, 0, 0] * scale, K[:, 0, 1] * scale, c], -1),
                                  torch.stack([zero, K[:, 1, 1] * scale, c], -1), torch.stack([zero, zero, one], -1)], 1)
            if self.orient and hand is not None:
                R = roll_upright(*hand, K_crop @ R @ inverse_intrinsics(K)) @ R
        else:
            R = torch.eye(3, dtype=K.dtype).expand(len(K), 3, 3)
            x0, y0 = centre[:, 0] - side / 2, centre[:, 1] - side / 2
            A = torch.stack([torch.stack([scale, zero, -x0 * scale - 0.5], -1), torch.stack([zero, scale, -y0 * scale - 0.5], -1),
                             torch.stack([zero, zero, one], -1)], 1)
            K_crop = A @ K
        source_from_crop = K @ R.transpose(1, 2) @ inverse_intrinsics(K_crop)
        offsets = (torch.arange(SUPERSAMPLES, dtype=image.dtype) + 0.5) / SUPERSAMPLES - 0.5
        fine = (torch.arange(S, dtype=image.dtype)[:, None] + offsets[None, :]).reshape(-1)  # S * k positions
        v, u = torch.meshgrid(fine, fine, indexing="ij")
        points = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, -1, 3) @ source_from_crop.transpose(1, 2)
        uv = points[..., :2] / points[..., 2:]
        if mirrored is not None:
            uv = torch.where(mirrored[:, None, None], torch.stack([width - 1 - uv[..., 0], uv[..., 1]], -1), uv)
        # grid_sample with align_corners=False puts pixel j's centre at (2j + 1) / n - 1; outside reads 0.
        grid = torch.stack([(2 * uv[..., 0] + 1) / width - 1, (2 * uv[..., 1] + 1) / height - 1], -1)
        grid = grid.reshape(len(image), S * SUPERSAMPLES, S * SUPERSAMPLES, 2)
        samples = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return F.avg_pool2d(samples, SUPERSAMPLES), R

    def forward(self, image: Tensor, K: Tensor) -> tuple[Tensor, ...]:
        small = self.rows @ image @ self.cols.T
        located = locate_hand(self.finder(small), self.image_size)
        if self.zoom > 0:
            located = look_twice(self.finder, image, located, self.zoom, self.finder_size, self.min_score, self.min_pixels)
        found = located.found(self.min_score, self.min_pixels)
        height, width = self.image_size
        whole = torch.tensor([-0.5, -0.5, width - 0.5, height - 0.5], dtype=image.dtype).expand_as(located.box)
        box = torch.where(found[:, None], located.box, whole)
        # As float weights: onnxruntime has no Where over booleans.
        hand = upright_points((located.hand & found[:, None, None]).to(image.dtype))
        if self.by_fit:
            return self._by_fit(image, K, box, hand, located.right, found)
        # The finder's side, where the model saw the other one only: the image (by its sampling), its
        # camera, the box and the hand's pixels are mirrored (u -> W - 1 - u), and the outputs mirrored back.
        if self.only_side:
            other = located.right < 0.5 if self.only_side == "right" else located.right >= 0.5
            mirrored = other & found
            seen, K_seen, box_seen, hand = self._mirrored(mirrored, image, K, box, hand)
        else:
            mirrored, seen, K_seen, box_seen = torch.zeros_like(found), image, K, box
        # No hand found: the whole image is cropped, unturned (end_to_end.py does the same).
        crops, R = self.crop(seen, K_seen, box_seen, hand, mirrored)
        z = self.encoder.mu_head(self.encoder.features(crops))
        return self._decoded(z, R, mirrored, (box, located.right, found.to(image.dtype)))

    def _by_fit(self, image: Tensor, K: Tensor, box: Tensor, hand: Tensor, right: Tensor, found: Tensor) -> tuple[Tensor, ...]:
        """Both hypotheses in one batch, as is and mirrored; each image keeps the one whose keypoint
        maps peak higher (``encoders.keypoints.keypoint_fit``), as predict's ``side_by_fit``, and with
        a side temperature the pose is both hypotheses' weighted by their probability, as predict's."""
        from encoders.keypoints import keypoint_fit

        B = len(image)
        flipped = torch.cat([torch.zeros_like(found), torch.ones_like(found)])
        points, weights = hand
        pair = self._mirrored(flipped, image.repeat(2, 1, 1, 1), K.repeat(2, 1, 1), box.repeat(2, 1),
                              (points.expand(2 * B, -1, -1), weights.repeat(2, 1)))
        crops, R_pair = self.crop(*pair, flipped)
        features, logits = self.encoder.features_and_keypoint_maps(crops)
        fit = keypoint_fit(logits)
        mirrored = (fit[B:] > fit[:B]) & found
        z_pair = self.encoder.mu_head(features)
        z = torch.where(mirrored[:, None], z_pair[B:], z_pair[:B])
        R = torch.where(mirrored[:, None, None], R_pair[B:], R_pair[:B])
        fit_right = mirrored if self.only_side == "left" else ~mirrored
        out = self._decoded(z, R, mirrored, (box, right, found.to(image.dtype), (fit_right & found).to(image.dtype)))
        if self.side_temperature <= 0:
            return out
        from crossmodal.side_weight import hedge, side_probability

        one = torch.ones_like(fit)
        back = torch.stack([torch.where(flipped, -one, one), one, one], -1)[:, None]
        pair = self.pose_decoder.decode(z_pair) @ R_pair * back
        # No hand found: the whole image, as is (the seen side), as without the hedge.
        p_seen = torch.where(found, side_probability(fit[:B], fit[B:], self.side_temperature), torch.ones_like(fit[:B]))
        return (hedge(pair[:B], pair[B:], p_seen), *out[1:])

    def _mirrored(self, mirrored: Tensor, image: Tensor, K: Tensor, box: Tensor,
                  hand: tuple[Tensor, Tensor]) -> tuple[Any, ...]:
        """Camera, box and hand pixels (``upright_points``) flipped left-right (u -> W - 1 - u) where
        ``mirrored``; the image is left as it is, for ``crop`` to sample it mirrored."""
        width = self.image_size[1]
        K = torch.where(mirrored[:, None, None], mirror_intrinsics(K, width), K)
        box = torch.where(mirrored[:, None], torch.stack([width - 1 - box[:, 2], box[:, 1], width - 1 - box[:, 0], box[:, 3]], -1), box)
        points, weights = hand
        points = points.expand(len(image), -1, -1)
        flipped = torch.stack([width - 1 - points[..., 0], points[..., 1]], -1)
        return image, K, box, (torch.where(mirrored[:, None, None], flipped, points), weights)

    def _decoded(self, z: Tensor, R: Tensor, mirrored: Tensor, tail: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Pose (and cloud) in the image's camera, mirrored back where the hand was mirrored, then ``tail``."""
        flip = torch.where(mirrored, -1.0, 1.0).to(z.dtype)
        back = torch.stack([flip, torch.ones_like(flip), torch.ones_like(flip)], -1)[:, None]
        pose = self.pose_decoder.decode(z) @ R * back  # rows: corrected -> camera is R^T, i.e. x @ R
        if self.cloud_decoder is None:
            return (pose, *tail)
        return (pose, self.cloud_decoder.decode(z) @ R * back, *tail)
