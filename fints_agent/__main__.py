"""``python -m fints_agent`` runs the command line."""

from fints_agent.cli import main

raise SystemExit(main())
