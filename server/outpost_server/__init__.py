"""Outpost coordination server: ts2021 control plane, DERP relay and STUN for
official Tailscale clients on sites with no internet. See docs/architecture.md."""

__version__ = "0.1.0"
