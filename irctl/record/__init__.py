"""The record: what a run proves afterwards, and the views of it that people read.

Owns the approval rules and signed statements (:mod:`irctl.record.approvals`), the
transcript's checkpoints and offline verification, the trust roots a reviewer brings
(keyrings), the exports (JSONL, Markdown, HTML, PDF), evidence packs and their zip
layout, anchoring to WORM storage, and a store moved to another database verified run by
run.  It may import the journal, the runbook and the public SDK; never the engine, the serve
endpoints, the drills or the CLI.
"""
