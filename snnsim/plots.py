"""`python3 -m snnsim.plots`: the command of :mod:`snnsim.analysis.plots`."""
if __name__ == "__main__":
    import sys

    from snnsim.analysis.plots import main
    sys.exit(main())
