"""Root conftest: load the suite's pytest plugins (options, fixtures, reports) for every run here."""

pytest_plugins = ["fixtures.plugin", "fixtures.routing_plugin", "fixtures.gke_plugin", "fixtures.diagnostics_plugin"]
