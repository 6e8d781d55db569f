"""`annrec chaos`: break things on purpose (crashes, swaps, bad indexes, outages, hostile input)
on real Kafka and Redis, and print what was lost. RELIABILITY.md has the figures."""
