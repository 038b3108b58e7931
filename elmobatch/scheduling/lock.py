"""The job lock now lives in elmobatch.locking (embed takes it too); kept so existing imports work."""

from elmobatch.locking import JobLock, LockHeld

__all__ = ["JobLock", "LockHeld"]
