"""`python3 -m snnsim.train`: the command of :mod:`snnsim.training.train`."""
if __name__ == "__main__":
    import sys

    from snnsim.training.train import main
    sys.exit(main())
