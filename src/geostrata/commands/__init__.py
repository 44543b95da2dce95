"""CLI command groups; each module owns one group and stays thin over the library."""

DEVICE_HELP = "auto (this process's GPU if there is one, else the CPU), cpu, cuda or cuda:N."
KB_EXTRA_HELP = (
    "Knowledge-base entry file (JSONL / YAML) added for this run only, e.g. classes no training "
    "image showed; repeat for several."
)
