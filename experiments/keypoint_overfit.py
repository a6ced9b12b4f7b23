"""Can the 2D keypoint stage memorise 64 training crops? (learning study: it is not broken if it can).

    python experiments/keypoint_overfit.py CACHE KEYPOINT_CE LR
    e.g. data/cache8k/synthetic_training_600391a76e5b.h5 1.0 1e-3 (the learning study's run)
"""
import sys, torch, time; sys.path.insert(0,'.')
torch.set_num_threads(1); torch.manual_seed(0)
import numpy as np
from crossmodal.data.cache import CacheReader
from crossmodal.registry import ENCODERS
import encoders
from encoders.keypoints import keypoint_loss
r = CacheReader(sys.argv[1])
S=[r[i] for i in range(64)]
img=torch.from_numpy(np.stack([s["image"] for s in S])).permute(0,3,1,2).float()/255
uv=torch.from_numpy(np.stack([s["uv"] for s in S]))
enc = ENCODERS.build("rgb_resnet18", keypoints=True, keypoint_ce=float(sys.argv[2]))
opt = torch.optim.Adam(enc.parameters(), lr=float(sys.argv[3]))
for step in range(301):
    idx = torch.randint(64, (32,))
    _, logits, pred = enc._features_and_keypoints(img[idx])
    loss = keypoint_loss(logits, pred, uv[idx], 64, enc.keypoint_ce)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0:
        enc.eval()
        with torch.no_grad():
            _, _, pred_all = enc._features_and_keypoints(img)
            e = (pred_all - uv).norm(dim=-1).mean()
        enc.train()
        print(step, round(loss.item(),2), "2D err %.2f px" % e, flush=True)
