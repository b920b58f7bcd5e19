"""A module that fails while being imported, for the hook error test."""

raise RuntimeError("this scoring module is broken on purpose")
