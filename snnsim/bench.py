"""`python3 -m snnsim.bench`: the command of :mod:`snnsim.analysis.bench`."""
if __name__ == "__main__":
    import sys

    from snnsim.analysis.bench import main
    sys.exit(main())
