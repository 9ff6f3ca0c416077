"""Packaging for wespeaker_py.

torch is deliberately unpinned: users bring the build that matches their
hardware (CUDA, ROCm or CPU).
"""
from setuptools import find_packages, setup

setup(
    name="wespeaker_py",
    version="0.1.0",
    description="Recipe-driven speaker verification toolkit in PyTorch",
    packages=find_packages(include=["wespeaker_py", "wespeaker_py.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch",
        "numpy",
        "scipy",
        "pyyaml",
        "tqdm",
        "kaldiio",
        "soundfile",
        "soxr",
        "matplotlib",
    ],
    entry_points={"console_scripts": ["wespeaker-py = wespeaker_py.cli.main:main"]},
    extras_require={
        "test": ["pytest", "pytest-xdist", "flake8", "kaldi-native-fbank", "onnx", "onnxruntime",
                 "silero-vad", "scikit-learn"],
        "export": ["onnx", "onnxruntime"],
        "ssl": ["transformers", "peft"],
        # speaker diarization: Silero VAD's ONNX file (the package needs only torch),
        # onnxruntime to run it, scikit-learn for k-means and agglomerative clustering
        "diar": ["silero-vad", "onnxruntime", "scikit-learn>=1.3"],
        # the optional 'umap-hdbscan' clustering (HDBSCAN itself is scikit-learn's)
        "diar-umap": ["silero-vad", "onnxruntime", "scikit-learn>=1.3", "umap-learn"],
    },
)
