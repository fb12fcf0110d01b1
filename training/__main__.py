"""`python -m vrnn.training` is `vrnn-train`."""

from vrnn.training.cli import main

if __name__ == "__main__":
    main(prog_name="python -m vrnn.training")
