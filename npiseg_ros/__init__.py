"""npiseg_ros: interactive 3-D segmentation with uncertainty (NPISeg3D) for ROS 2.

Layers (never imported upwards):
- ``npiseg_ros.core``: model, voxelisation, interactive session (PyTorch + numpy, no ROS).
- ``npiseg_ros.eval``: click simulator, metrics, dataset readers, baselines, ``npiseg-eval``.
- ``npiseg_ros.ros``: the ROS 2 node, a thin adapter over ``core``.
"""
import pkgutil

# The ROS interface generator installs ``npiseg_ros/msg`` and ``npiseg_ros/srv`` into the
# interpreter's site-packages. Extending the package path lets a source checkout on sys.path and
# those generated modules live under one ``npiseg_ros`` name.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
