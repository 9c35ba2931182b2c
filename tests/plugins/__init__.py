"""Plug-ins kept outside the harness, loaded through ``$MATRIX_PLUGINS`` by the tests that prove the core
needs no edit for a new model."""
