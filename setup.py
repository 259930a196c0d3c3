"""pip-installable npiseg_ros (no ROS needed): core, evaluation, ROS node code, training package.

In a ROS 2 workspace, colcon builds the package with CMakeLists.txt (ament_cmake, because the
package generates its own interfaces); this file serves `pip install .` on machines without ROS.
"""
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "npiseg_ros"
HERE = Path(__file__).parent


def share(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(HERE)) for p in HERE.glob(pattern))


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Interactive 3-D segmentation with uncertainty (NPISeg3D) as a ROS 2 node",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["npiseg_ros", "npiseg_ros.*", "npiseg_train",
                                    "npiseg_train.*"]),
    # torch is a range for users; CI pins torch==2.13.0 (CPU) before installing this.
    install_requires=[
        "numpy>=1.23",
        "torch>=2.1,<3",
        "pyyaml>=5.4",
        "scipy>=1.9",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "matplotlib>=3.5",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.100,<7",
                 # npiseg-annotate's browser test drives the system Chromium (never downloads one)
                 "selenium==4.51.0"],
        # npiseg-annotate: rosbag2 bags (sqlite3 + MCAP) without ROS (docs/annotate.md);
        # Pillow decodes CompressedImage topics and writes the camera overlay's PNG.
        "annotate": ["rosbags==0.11.9", "Pillow>=9"],
        # npiseg-annotate triage --out: triage.parquet (pyarrow); --ray: workers on Ray
        # (docs/triage.md). Ray's own extras (dashboard) are not needed.
        "fleet": ["ray>=2.9", "pyarrow>=12"],
        # The training package ships in this distribution; the extra names what only it uses.
        "train": ["tqdm>=4.60"],
        # Optional sparse-conv accelerator (never required; see docs/backbone.md).
        "spconv": ["spconv>=2.3"],
    },
    package_data={"npiseg_ros.annotate": ["web/*.html", "web/*.js", "web/*.css"]},
    data_files=[
        (f"share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", share("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", share("config/*.yaml") + share("config/*.xml")
         + share("config/*.rviz")),
        (f"share/{PACKAGE}/checkpoints", share("checkpoints/*.safetensors")),
    ],
    entry_points={
        "console_scripts": [
            "npiseg-eval = npiseg_ros.eval.cli:main",
            "npiseg-train = npiseg_train.cli:main",
            "npiseg-segment-node = npiseg_ros.ros.node_main:main",
            "npiseg-demo = npiseg_ros.ros.demo:main",
            "npiseg-annotate = npiseg_ros.annotate.cli:main",
        ],
    },
)
