"""CLI command groups; each module owns one group and stays thin over the library."""
