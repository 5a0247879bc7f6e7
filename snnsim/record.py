"""`python3 -m snnsim.record`: the command of :mod:`snnsim.analysis.record`."""
if __name__ == "__main__":
    import sys

    from snnsim.analysis.record import main
    sys.exit(main())
