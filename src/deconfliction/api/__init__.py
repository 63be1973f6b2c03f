"""The HTTP face: native API under /v1."""
