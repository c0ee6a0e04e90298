"""pytest plugin (registered through the ``pytest11`` entry point); options come with issue 4."""
