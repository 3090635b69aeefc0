# Root conftest: lets the project's own tests drive pytest in subprocesses.
pytest_plugins = ["pytester"]
