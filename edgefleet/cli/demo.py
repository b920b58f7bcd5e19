"""`edgefleet demo`: placeholder, filled in by its owner."""


def demo() -> None:
    """Run the end-to-end demo."""
