"""eventwire benchmarks against raw nats-py (and FastStream when installed), measured in one run.

Run ``./scripts/bench`` (or ``python -m bench --help``). Every figure is a
ratio to a baseline measured in the same run, on the same server and data.
"""
