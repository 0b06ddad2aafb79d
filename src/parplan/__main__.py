"""`python -m parplan` runs the command-line interface."""

from parplan.cli import main

if __name__ == "__main__":
    main()
