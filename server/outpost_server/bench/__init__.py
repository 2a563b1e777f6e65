"""Load harness and benchmarks: `python -m outpost_server.bench` (`make bench`).

Layout:
- `serve`:      the server under test, run in its own process (its own GIL),
                optionally with an emulated per-node visibility;
- `procstat`:   starting/stopping that process and reading its CPU and RSS
                from /proc;
- `swarm`:      thousands of simulated ts2021 nodes in one asyncio loop, each
                decoding every map frame so change arrival can be timed;
- `scenarios`:  registration, fan-out, idle, reconnect storm at one size;
- `relay`:      Outpost's DERP relay against a plain asyncio TCP forwarder;
- `report`:     targets, the markdown table appended to docs/benchmarks.md,
                PNG plots.
"""
