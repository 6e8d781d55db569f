"""`annrec bench ...`: commands that print figures and write them (JSON) next to the machine
they were measured on. Figures in README.md / BENCHMARKS.md come from these."""
