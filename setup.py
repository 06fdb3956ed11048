from setuptools import setup

setup(
    name="vitpose-fast",
    version="0.1.0",
    description="A fast, faithful ViTPose: PyTorch model with Triton kernels and a parity-checked reference path",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # vitpose_fast/kernels is a link to the top-level kernels/ folder, which has no __init__.py: it is importable
    # only as vitpose_fast.kernels, never as a top-level `kernels` that would shadow the PyPI package of that name.
    packages=[
        "vitpose_fast",
        "vitpose_fast.benchmarking",
        "vitpose_fast.cli",
        "vitpose_fast.data",
        "vitpose_fast.inference",
        "vitpose_fast.kernels",
        "vitpose_fast.model",
        "vitpose_fast.reference",
        "vitpose_fast.training",
    ],
    # torch: any 2.x from 2.4 on (2.13 included; never pin a newer one, the CPU wheel is 2.13).
    install_requires=["torch>=2.4", "triton>=3.4; platform_system == 'Linux'", "numpy", "pycocotools", "pillow", "tqdm"],
    extras_require={
        "dev": [
            "pytest",
            "pytest-benchmark",
            "transformers>=4.48",
            "safetensors",
            "opencv-python-headless",
            "scipy",  # transformers' VitPose image processor warps and blurs with scipy
            "matplotlib",
            "huggingface_hub",  # Hub ids in Model.from_pretrained (also a transformers dependency)
            "onnx",  # ONNX export (torch.onnx's exporter needs onnxscript) checked with onnxruntime
            "onnxscript",
            "onnxruntime",
            "motmetrics",  # tracking metrics (IDF1, MOTA, id switches) of the tracking benchmark and its test
            "ray[data]>=2.40",  # vitpose_fast.ray and `predict --engine ray`
        ],
        "gpu": ["xformers"],
        # Optional features for users: each is imported only when used.
        "hub": ["huggingface_hub"],
        # Video: OpenCV decoding/encoding, SciPy's assignment for tracking, motmetrics for the tracking benchmark.
        # trackeval (HOTA) is optional and NOT listed: its package requires the GUI opencv-python, which would
        # replace opencv-python-headless's cv2 and needs libGL; install it with `pip install --no-deps trackeval`.
        "video": ["opencv-python-headless", "scipy", "motmetrics"],
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
        "ray": ["ray[data]>=2.40"],
    },
    entry_points={"console_scripts": ["vitpose-fast=vitpose_fast.cli:main"]},
)
