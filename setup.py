"""ament_python / pip build of monodepth_ros.

Two import packages come out of this one distribution:
- ``monodepth_ros`` (folder ``monodepth_ros/``): the runtime. NumPy, OpenCV, ONNX Runtime, rclpy. No torch.
- ``monodepth_training`` (folder ``training/``): the offline trainer and exporter. It imports the runtime,
  never the other way round. It is mapped to a distinct import name so that nothing called ``training``
  lands in site-packages.
"""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = "monodepth_ros"


def _requirements(name):
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    with open(os.path.join(here, "requirements", name)) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-r"):
                out.append(line)
    return out


training_packages = ["monodepth_training"] + [
    "monodepth_training." + p for p in find_packages("training")
]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["monodepth_ros", "monodepth_ros.*"]) + training_packages,
    package_dir={"monodepth_training": "training"},
    package_data={"monodepth_ros": ["models/*.onnx", "models/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/launch/rviz", glob("launch/rviz/*.rviz")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/config/train", glob("config/train/*.yaml")),
    ],
    # ROS wheels and torch are not listed here: on a robot they come from the ROS distro (package.xml),
    # and the pinned PyPI stack is installed from requirements/*.txt by `make setup`.
    install_requires=["numpy", "PyYAML"],
    # Optional inference backends: pip install "monodepth_ros[openvino]" (or -r requirements/openvino.txt).
    extras_require={"test": ["pytest"], "openvino": _requirements("openvino.txt")},
    zip_safe=False,
    maintainer="monodepth_ros developers",
    maintainer_email="dev@monodepth-ros.local",
    description="Self-supervised monocular depth for ROS 2: trainer, evaluation, export and depth node.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "depth_node = monodepth_ros.depth_node:main",
            "depth_node_managed = monodepth_ros.managed_node:main",
            "monodepth-synth = monodepth_ros.synthetic.cli:main",
            "monodepth-eval = monodepth_ros.evaluation.evaluate:main",
            "monodepth-replay = monodepth_ros.replay:main",
            "monodepth-train = monodepth_training.cli:main",
            "monodepth-export = monodepth_training.export.cli:main",
            "monodepth-fit-validity = monodepth_training.validity:main",
        ],
        # Extension point: inference backends that need more than the runtime (e.g. torch) register here,
        # so the runtime can offer them without importing the trainer.
        "monodepth_ros.backends": [
            "torch = monodepth_training.inference:TorchBackend",
        ],
    },
)
