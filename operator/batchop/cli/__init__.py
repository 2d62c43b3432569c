"""The ``batchop`` command line: the top layer, which nothing else imports.

:mod:`.main` builds the parser and dispatches to one module per subcommand in :mod:`.commands`;
:mod:`.statustable` renders ``batchop status``. Exit codes are in :mod:`batchwire.exitcodes`, shared with
the local Batch service's own command line.
"""
