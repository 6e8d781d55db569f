"""The tools around annrec: the `annrec` command line, demo, local stack, client, status,
benchmarks and the fault suite. They may import every side; nothing imports them."""
