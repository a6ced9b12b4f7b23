"""A whole image to 3D joints: the hand finder (``crossmodal.finder``) and a pose model
(``crossmodal.predict``) together. ``graph``: the image -> joints module that export writes as
one ONNX or TorchScript graph; ``export``: ``export --finder``; ``end_to_end``: ``finder-eval``,
the end-to-end EPE with the finder's crops against the ground-truth crops.

Imports go one way: this package uses the finder and predict; neither uses it.
"""
