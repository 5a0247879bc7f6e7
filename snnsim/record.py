"""`python3 -m snnsim.record`: the command of :mod:`snnsim.analysis.record`.

Ctrl-C and SIGTERM are taken over before the command's module is imported
(:mod:`snnsim.signals`): one line and exit status 130 at any moment."""
if __name__ == "__main__":
    from snnsim.signals import main

    main("record", "snnsim.analysis.record")
