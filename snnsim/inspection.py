"""`python3 -m snnsim.inspection`: the command of :mod:`snnsim.analysis.inspection`."""
if __name__ == "__main__":
    import sys

    from snnsim.analysis.inspection import main
    sys.exit(main())
