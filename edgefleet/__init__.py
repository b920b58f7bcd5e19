"""edgefleet: from a trained model to a healthy fleet of edge devices.

This package holds the operator-facing command line. The work itself lives in the sibling
packages: ``converter``, ``edge_agent``, ``fleet``, ``models`` and ``hw_profiles``.
"""

__version__ = "0.1.0"
