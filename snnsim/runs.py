"""`python3 -m snnsim.runs`: the command of :mod:`snnsim.analysis.runs`."""
if __name__ == "__main__":
    import sys

    from snnsim.analysis.runs import main
    sys.exit(main())
