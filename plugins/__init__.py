"""Built-in plugins: one module per technique, named after the idea.

Each plugin is a small frozen dataclass whose fields are its recipe parameters (documented with
:func:`replicator.core.params.param`) and whose ``@hookimpl`` methods implement one or more hooks.
"""
