"""The checks: one module per family (run with `pytest suites/ -m pattern2`, or installed:
`pytest --pyargs llmd_conformance.suites -m pattern2`)."""
