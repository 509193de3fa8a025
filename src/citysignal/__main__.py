"""`python -m citysignal` runs the command line."""

from citysignal.cli import main

main()
