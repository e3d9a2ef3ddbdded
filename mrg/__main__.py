"""``python -m mrg`` runs the command-line interface."""

from mrg.cli import main

if __name__ == "__main__":
    main()
