"""Annotation of one cloud on top of the segmentation session, without ROS.

:class:`AnnotationController` is what the ROS node's worker and the browser tool's workspace
share: clicks, undo, objects, decodes, autosave, resume and exports.
"""
from npiseg_ros.annotation.controller import (SESSION_SETTINGS, AnnotationController,
                                              AnnotationState, ResumeOutcome)

__all__ = ["AnnotationController", "AnnotationState", "ResumeOutcome", "SESSION_SETTINGS"]
