"""camjax: camera-controlled video diffusion in JAX/Flax."""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.12",
    "optax",
    "orbax-checkpoint",
    "grain",
    "tensorflow-datasets",
    "importlib_resources",  # tfds.data_source without TensorFlow needs it (STACK.md)
    "einops",
    "ml-collections",
    "chex",
    "mediapy",
    "imageio-ffmpeg<0.8",  # 0.8 bundles ffmpeg 9, which mediapy's read_video cannot drive
    "numpy",
    "pillow",
    "matplotlib",
    "tqdm",
    "absl-py",
    "safetensors",  # WAN weight import (camjax.models.weights)
    "tensorboardX",  # training metrics as TensorBoard event files
    # The main job's end-of-run evaluation (SfM camera accuracy) and curation: both are wheels.
    "pycolmap",
    "opencv-python-headless<5",  # 5.x (2026-12): findEssentialMat asserts in solvePoly on real clips
]

EXTRAS_REQUIRE = {
    "test": ["pytest", "pytest-xdist", "chex"],
    # Reference implementations used only by parity tests.
    "parity": [
        "torch==2.13.0",
        "diffusers",
        "transformers",
        "accelerate",
        "safetensors",
        "evo",
    ],
    # Kept so `pip install -e ".[curate]"` still works; both are now in the base install.
    "curate": ["pycolmap", "opencv-python-headless<5"],
    # The trajectory editor (`python -m camjax.app`) and its browser test. playwright is only the Python driver:
    # the test launches Debian's /usr/bin/chromium (`.ci/run` installs it); never `playwright install`.
    "app": ["viser>=1.1", "playwright"],
}

setuptools.setup(
    name="camjax",
    version="0.1.0",
    description="Camera-controlled video diffusion in JAX/Flax (CameraCtrl II, RealCam-I2V, Track2View, MotionFlow).",
    packages=setuptools.find_packages(include=["camjax", "camjax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
