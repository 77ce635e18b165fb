"""A small Wan-architecture model and a real-text encoder for the embedded default run and the tests."""
