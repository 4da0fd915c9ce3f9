"""Depth and pose networks (one file per network) and the name registry that configs and bundles use."""

from monodepth_training.networks.depth_decoder import DepthDecoder
from monodepth_training.networks.monodepth2 import Monodepth2DepthNet, Monodepth2PoseNet, predict_T_src_from_tgt
from monodepth_training.networks.pose_decoder import PoseDecoder
from monodepth_training.networks.registry import (
    DEPTH_NETS,
    POSE_NETS,
    build_depth_net,
    build_pose_net,
    list_models,
    register_depth_net,
    register_pose_net,
)
from monodepth_training.networks.resnet_encoder import ResnetEncoder

__all__ = [
    "DEPTH_NETS",
    "POSE_NETS",
    "DepthDecoder",
    "Monodepth2DepthNet",
    "Monodepth2PoseNet",
    "PoseDecoder",
    "ResnetEncoder",
    "build_depth_net",
    "build_pose_net",
    "list_models",
    "predict_T_src_from_tgt",
    "register_depth_net",
    "register_pose_net",
]
