"""CLI command groups; each module owns one group and stays thin over the library."""

DEVICE_HELP = "auto (this process's GPU if there is one, else the CPU), cpu, cuda or cuda:N."
