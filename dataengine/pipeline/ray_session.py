"""The driver's Ray: connect to a cluster or start a local one, with the engine's quiet defaults."""
from __future__ import annotations

import sys

from dataengine.progress import progress_enabled  # one rule for every bar: DATAENGINE_PROGRESS, CI, tty


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to `address`, or start a local Ray; reuse one that is already up."""
    import ray

    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                      ignore_reinit_error=True)
        if address and address != "local":
            ray.init(address=address, **kwargs)
        else:  # "local" starts a fresh Ray even when `ray start` left a cluster address behind
            ray.init(address=address, num_cpus=num_cpus, **kwargs)
    ctx = ray.data.DataContext.get_current()
    quiet = not progress_enabled(sys.stderr)
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = False
    return ray
