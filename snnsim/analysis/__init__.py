"""Analysis: spike recordings (``record``), figures (``plots``), every intermediate of
one forward/backward pass (``inspection``) and the speed/memory benchmark (``bench``)."""
