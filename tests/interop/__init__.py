"""Official Tailscale clients against Outpost, each in its own network namespace (netns)."""
