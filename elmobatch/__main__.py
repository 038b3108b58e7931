"""`python -m elmobatch ...`: the same command line as `elmobatch ...`."""

from elmobatch.cli import main

main(prog_name="elmobatch")
