"""The HTTP boundary to upstream services: building, sending and classifying requests."""
