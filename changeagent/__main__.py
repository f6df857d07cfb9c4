"""`python -m changeagent ...` (also what `torchrun -m changeagent train ...` runs)."""

from changeagent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
