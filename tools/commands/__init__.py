"""The thin `annrec` sub-commands: each module adds its command's arguments and handles it.

Commands with a body of their own register themselves beside it: tools/demo.py, tools/chaos/run.py,
tools/bench/cli.py (and every tools/bench/<kind>.py).
"""
