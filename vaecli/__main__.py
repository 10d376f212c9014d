"""`python -m vaecli` runs the `vae` command (torchrun launches it this way too)."""

from vaecli.cli import main

if __name__ == "__main__":
    main()
