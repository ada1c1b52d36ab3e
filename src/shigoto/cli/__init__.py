"""The ``shigoto`` command line: click commands with rich output.

One module per idea: :mod:`.main` (the group and its global options), :mod:`.session`
(how a command gets its URL, App and event loop), :mod:`.render` (tables and
formatting), :mod:`.loading` (``module:app`` imports), and one module per command.

Nothing is imported here, so ``python -m shigoto.cli.main`` runs without warnings.
"""
