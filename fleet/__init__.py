"""The fleet server and the operator's view of it: device and model registries, rollouts, drift.

Not built yet; see the open issues. The package exists so the layout shows the architecture.
"""
