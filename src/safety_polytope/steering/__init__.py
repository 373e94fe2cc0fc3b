"""Steering: correcting hidden states so the safety polytope holds (see ``solvers``)."""

from .solvers import (
    SOLVERS,
    ProjectionCache,
    project,
    project_identity,
    project_relu,
    redirect,
    safeflow,
)

__all__ = [
    "SOLVERS",
    "ProjectionCache",
    "project",
    "project_identity",
    "project_relu",
    "redirect",
    "safeflow",
]
