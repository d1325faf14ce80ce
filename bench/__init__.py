"""Benchmarks: latency to a console, and how many clients and servers one gateway carries.

``python -m bench NAME [--quick] [--json FILE]`` with NAME one of ``roundtrip``,
``fanout``, ``connections``, ``parsing`` or ``all``. Every benchmark starts what it needs
(the gateway and the agent in their own processes, RabbitMQ from ``RESOFLEET_AMQP_URL``),
measures its own baselines in the same run and prints one table: figure, baseline, ratio.
Machines are noisy; only the ratios compare across machines. See ``bench/README.md``.

Benchmarks print; they never assert. A missed target is a row marked ``MISS``, not a
failure: only a crash makes ``python -m bench`` exit non-zero.
"""

from __future__ import annotations

__all__: list[str] = []
