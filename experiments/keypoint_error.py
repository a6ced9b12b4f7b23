"""The 2D keypoint stage of a trained checkpoint: its error on 200 validation crops (eval and train
mode), with hard argmax, and how peaked its maps are (learning study, benchmarks/results/learning.md).

    python experiments/keypoint_error.py runs/<run>/checkpoints/last.ckpt
"""
import sys, torch; sys.path.insert(0,'.')
torch.set_num_threads(1)
from crossmodal.data.datamodule import build_datamodule
from crossmodal.trained import load_trained_module
from encoders.keypoints import soft_argmax
m = load_trained_module(sys.argv[1]); cfg = m.cfg
from omegaconf import OmegaConf
from crossmodal.config import Config
dm = build_datamodule(OmegaConf.merge(OmegaConf.structured(Config), cfg)); dm.setup("fit")
ds = dm.datasets["val"]
S=[ds[i] for i in range(200)]
b={k: torch.stack([s[k] for s in S]) for k in ("image","uv","visible")}
enc = m.strategy.encoders["image"]
for mode in ("eval","train"):
    enc.train(mode=="train")
    with torch.no_grad():
        feats, logits, _ = enc._features_and_keypoints(b["image"])
        uv = soft_argmax(logits, 64)
    err = (uv-b["uv"]).norm(dim=-1)
    print(mode, "2D err all %.2f px, visible %.2f px, per-joint:" % (err.mean(), err[b["visible"]].mean()), [round(x,1) for x in err.mean(0).tolist()])
enc.eval()
with torch.no_grad():
    feats, logits, _ = enc._features_and_keypoints(b["image"])
B,J,h,w = logits.shape
idx = logits.flatten(2).argmax(-1)
hard = torch.stack([(idx % w + 0.5)*64/w - 0.5, (idx // w + 0.5)*64/h - 0.5], -1)
print("hard argmax err %.2f px" % (hard-b["uv"]).norm(dim=-1).mean())
p = logits.flatten(2).float().softmax(-1)
print("max prob mean %.3f, entropy %.2f (uniform %.2f)" % (p.max(-1).values.mean(), -(p*p.clamp_min(1e-12).log()).sum(-1).mean(), torch.log(torch.tensor(float(h*w)))))
