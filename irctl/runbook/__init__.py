"""The runbook: YAML parsed once into typed models, checked, and its templates rendered.

Owns the models (runbooks, drills, irctl.yaml), the loader with its ``file:line:column``
problems, the locations in a document, params, the checks pydantic cannot express, and
the sandboxed templates with their limits (:mod:`irctl.runbook.limits`).  It may import
only the public SDK below it (:mod:`irctl.errors`, :mod:`irctl.actions`,
:mod:`irctl.canonical`): nothing recorded, executed or shown.
"""
