"""Simulated IB Gateway (TWS API socket protocol, server versions 157-178). See server.py."""

from .server import SimGateway

__all__ = ["SimGateway"]
