"""The ``mtl-tune`` command line: it parses arguments and calls tuner, storage and api."""
