"""The REST API under ``/api/v1``: one router per resource, the contract in ``schemas``.

Kept import-free on purpose: the CLI imports ``fleet.api.schemas`` without FastAPI.
"""
