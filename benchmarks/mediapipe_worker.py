"""MediaPipe Hands timed on image files, for ``benchmarks/latency.py``.

Runs in its own environment (``.venv-mediapipe``: mediapipe==0.10.14 pins a protobuf that onnx
refuses), so it imports nothing from crossmodal. The legacy ``solutions.hands`` pipeline is used
because its wheel ships the palm detector and the landmark model (the Tasks API needs a model
file downloaded), with ``static_image_mode``: palm detection on every image, as our finder does.

Protocol on stdin/stdout, one JSON object a line: ``{"paths": [...]}`` -> ``{"ms": [...],
"found": [...]}`` (per image: the time of ``process`` on the decoded RGB array, and whether a
hand was found); ``{"warmup": n, "path": p}`` -> ``{"ok": true}``; end of input ends it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from PIL import Image


def main() -> int:
    import mediapipe as mp

    hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=1, model_complexity=1,
                                     min_detection_confidence=0.5)
    print(json.dumps({"ready": True, "mediapipe": mp.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "warmup" in request:
            rgb = np.asarray(Image.open(request["path"]).convert("RGB"))
            for _ in range(int(request["warmup"])):
                hands.process(rgb)
            print(json.dumps({"ok": True}), flush=True)
            continue
        ms, found = [], []
        for path in request["paths"]:
            rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
            start = time.perf_counter()
            result = hands.process(rgb)
            ms.append((time.perf_counter() - start) * 1000.0)
            found.append(bool(result.multi_hand_landmarks))
        print(json.dumps({"ms": ms, "found": found}), flush=True)
    hands.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
