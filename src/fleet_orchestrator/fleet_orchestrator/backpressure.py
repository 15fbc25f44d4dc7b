"""Re-exported for existing imports: the shard's backpressure is decided in the pure core
(fleet_core.shard_backpressure)."""

from fleet_core.shard_backpressure import MAX_TRACKED, ShardBackpressure

__all__ = ['MAX_TRACKED', 'ShardBackpressure']
