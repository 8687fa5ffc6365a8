# Root conftest: every suite in the monorepo (tensor-utils, packages/*, tests/) gets the shared
# markers' skip rules, the device fixtures and the hypothesis profiles from tensor-utils.
pytest_plugins = ["tensor_utils_dev.testing.pytest_plugin"]
