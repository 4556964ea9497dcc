"""The law in code: errors, gate bindings and the schemas of spec, registry and evidence.

This package reads spec/ and imports nothing from `stack`, so tools can audit the stack
without running it.
"""
