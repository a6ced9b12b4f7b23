"""Inference on a user's own images: crop as in training, encode the RGB crop, decode joints and cloud.

    python -m crossmodal predict --ckpt PATH --image IMG [IMG|DIR ...]
                                 [--mask M ... | --bbox x,y,w,h | --finder FINDER | --whole-image]
                                 [--K fx,fy,cx,cy] [--hand left|right] [--bone-mm MM] [--cloud|--no-cloud]
                                 [--out DIR]

Each image gets a folder ``<out>/<image stem>/`` with

* ``joints.json``  the 21 joints by name in RHD order, root-relative, in the original camera frame;
* ``overlay.png``  the image with the 2D projection of the joints and the outline of the crop;
* ``skeleton.png`` a 3D plot of the joints (and of the cloud, when there is one);
* ``cloud.ply``    the point cloud decoded from the RGB crop alone (the paper's side product),
  written with Open3D and coloured by depth, when the model has a cloud decoder.

The crop is made by the training pipeline's own code (``crossmodal.data.preprocess.crop_box``
and ``crop_rgb``): the hand box (from the mask, ``--bbox``, the hand finder, or the whole image) widened by
``crop_margin``, the virtual camera rotated onto the hand when the checkpoint was trained with
view correction, resized to the checkpoint's crop size.

What one image cannot tell, and what is done instead (every choice is written into joints.json):

* scale: the pose decoder predicts joints divided by the length of the bone 12 -> 11. Without
  ``--bone-mm`` the output stays in those units ("normalised"); with it, millimetres.
* root position: unknown from one image. For the overlay only, the root is placed so that the
  projected joints fill the hand box; the 3D outputs stay root-relative.
* intrinsics: ``--K``, or else a pinhole camera with focal length = image width and the
  principal point at the image centre.
* hand side: see :func:`plan_hand`; with the finder, its side unless ``--hand`` is given.

The package, by job: ``inputs`` (images, masks, --bbox, --K), ``side`` (which hand, mirroring),
``boxes`` (hand box -> crop), ``finding`` (the finder stage), ``model`` (the checkpoint),
``image`` (one image through the model), ``outputs`` (joints.json and the figures),
``command`` (the CLI over many images).
"""

from crossmodal.predict.boxes import HandRegion, box_region, hand_region
from crossmodal.predict.command import predict_images
from crossmodal.predict.finding import NoHandFound, finder_region
from crossmodal.predict.image import NORMALISED_UNITS, Prediction, fit_root_translation, mirror_intrinsics, predict_image
from crossmodal.predict.inputs import (
    IMAGE_SUFFIXES,
    InputError,
    assumed_intrinsics,
    expand_images,
    parse_bbox,
    parse_intrinsics,
    read_hand_mask,
    read_image,
)
from crossmodal.predict.model import InferenceModel, load_model
from crossmodal.predict.outputs import prediction_record, write_prediction
from crossmodal.predict.side import TRAINING_HANDS, HandPlan, plan_hand

__all__ = [
    "HandPlan", "HandRegion", "IMAGE_SUFFIXES", "InferenceModel", "InputError", "NORMALISED_UNITS", "NoHandFound",
    "Prediction", "TRAINING_HANDS", "assumed_intrinsics", "box_region", "expand_images", "finder_region",
    "fit_root_translation", "hand_region", "load_model", "mirror_intrinsics", "parse_bbox", "parse_intrinsics",
    "plan_hand", "predict_image", "predict_images", "prediction_record", "read_hand_mask", "read_image",
    "write_prediction",
]
