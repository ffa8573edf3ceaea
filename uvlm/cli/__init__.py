"""`uvlm` command line: one subcommand per pipeline step (uvlm/steps.py), grouped by DVC phase.

The parser and dispatch are in uvlm.cli.main; each phase's subcommands in uvlm/cli/<phase>.py. This
file imports nothing, so that a step's code is its phase module alone (uvlm.step_code).
"""
