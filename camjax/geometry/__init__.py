"""camjax.geometry: cameras, file formats, Plücker rays, trajectories, alignment and metrics (OpenCV axes).

Conventions are in `cameras.py`'s docstring and REFERENCE.md sections 1-2.
"""

from camjax.geometry import metrics, render, sfm
from camjax.geometry.align import Similarity, align_orientations, associate, umeyama
from camjax.geometry.balancing import DIRECTIONS, TURNS, TrajectoryAnalysis, analyze, balance, category_counts
from camjax.geometry.cameras import Cameras, default_intrinsics, intrinsics, validate_poses
from camjax.geometry.errors import CameraError
from camjax.geometry.formats import (read_colmap, read_kitti, read_motionctrl, read_multicam, read_nerf_transforms,
                                     read_nerfies, read_re10k, read_tum, unreal_to_opencv_c2w, write_kitti,
                                     write_motionctrl, write_nerf_transforms, write_re10k, write_tum)
from camjax.geometry.plot import plot_trajectories
from camjax.geometry.plucker import pixel_unshuffle, plucker, plucker_unshuffled
from camjax.geometry.render import (Preview, RenderError, coverage_mask, latent_mask, preview, remove_outliers,
                                    render_points)
from camjax.geometry.trajectories import PRESETS, chain, interpolate_poses, preset, resample

__all__ = [
    "Cameras", "CameraError", "DIRECTIONS", "PRESETS", "Preview", "RenderError", "Similarity", "TURNS", "TrajectoryAnalysis",
    "align_orientations", "analyze", "sfm", "associate", "balance", "category_counts", "chain", "coverage_mask",
    "default_intrinsics", "latent_mask", "preview", "remove_outliers", "render", "render_points",
    "interpolate_poses", "intrinsics", "metrics", "pixel_unshuffle", "plot_trajectories", "plucker",
    "plucker_unshuffled", "preset", "read_colmap", "read_kitti", "read_motionctrl", "read_multicam",
    "read_nerf_transforms", "read_nerfies", "read_re10k", "read_tum", "resample", "umeyama",
    "unreal_to_opencv_c2w", "validate_poses", "write_kitti", "write_motionctrl", "write_nerf_transforms",
    "write_re10k", "write_tum",
]
