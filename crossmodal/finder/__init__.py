"""The hand finder: where the hand is in a whole image, and which hand it is.

    python -m crossmodal finder [key=value ...]      # train (make finder), runs/finder-<time>/
    python -m crossmodal predict --ckpt CKPT --image photo.jpg    # uses it when no --mask/--bbox

``resize``   area downscaling as one matrix product per axis (the same in training, predict and ONNX)
``locate``   logits -> the hand's pixels, side and box (torch ops only, so it exports to ONNX)
``data``     RHD-format frames (colour + part mask) at the finder's working resolution
``module``   the LightningModule that trains a registered finder (``finders/``)
``metrics``  mask IoU, box IoU and side accuracy at full resolution
``train``    the run: folder, checkpoints, evaluation report, runs/latest-finder
``model``    a trained finder loaded for inference, and where predict finds one

The finder and a pose model together (the image -> joints graph, ``export --finder``,
``finder-eval``) live in ``crossmodal.pipeline``.
"""
