"""Typed exceptions: every user-facing failure says what was received, what was expected, and how
to fix it. The CLI turns these into a one-line message and a non-zero exit code."""

from __future__ import annotations


class SapError(Exception):
    """Base class of every error this library raises on purpose."""


class InputError(SapError, ValueError):
    """Bad user input: data files, features, arguments."""


class AssetError(SapError, RuntimeError):
    """A packaged asset (model or data archive) could not be fetched, verified or converted."""


class ModelError(SapError, ValueError):
    """A model cannot be loaded, or does not match what an artifact was built for."""
